package analyze

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func TestDropRateSpikeOpensAndResolves(t *testing.T) {
	var got []schema.Finding
	d, err := NewDropRate(DefaultDropRateConfig(), FindingFunc(func(f schema.Finding) { got = append(got, f) }), nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	var packets uint64
	read := func(i int, rate uint64) {
		packets += rate * 15
		// through the counter-sink door serve's fan-out uses
		_ = d.WriteCounters(context.Background(), []schema.CounterSample{
			{Time: t0.Add(time.Duration(i) * 15 * time.Second), Node: "node-1", Family: "inet", Table: "flowwarden", Chain: "input",
				Handle: 42, Comment: "flowwarden: not observed", Drop: true, Packets: packets, Bytes: packets * 60},
			// an accept rule with the same traffic never fires
			{Time: t0.Add(time.Duration(i) * 15 * time.Second), Node: "node-1", Family: "inet", Table: "flowwarden", Chain: "input",
				Handle: 41, Comment: "observed", Packets: packets, Bytes: packets * 60},
		})
	}
	// a steady 2 packets/s of background drops
	for i := 0; i < 6; i++ {
		read(i, 2)
	}
	if len(got) != 0 {
		t.Fatalf("steady drops fired: %+v", got)
	}
	read(6, 40) // a scan: 20× the baseline
	read(7, 60)
	if len(got) != 2 || got[0].Status != schema.FindingOpen || got[0].ID != got[1].ID {
		t.Fatalf("spike: %+v", got)
	}
	f := got[1]
	if f.Detector != DropRateDetector || f.Workload != "node-1" || f.Peer != "inet flowwarden input #42" ||
		f.Evidence.Observed != 60 || f.Evidence.Baseline < 1.9 || f.Evidence.Baseline > 2.1 || f.Evidence.Threshold != 8 ||
		f.Evidence.Flows != 100*15 || !strings.Contains(f.Summary, `"flowwarden: not observed"`) {
		t.Errorf("finding %+v", f)
	}
	if c := f.Counters; c == nil || c.Handle != 42 || c.Table != "flowwarden" || f.Flows != nil || f.Query != "" {
		t.Errorf("selector %+v, flows %+v, query %q: want the counter readings of rule 42, no SQL from the detector", c, f.Flows, f.Query)
	}
	clickhouse.RenderQuery(&f)
	if !strings.Contains(f.Query, "FROM nft_counters") || !strings.Contains(f.Query, "handle = 42") {
		t.Errorf("query %s", f.Query)
	}
	read(8, 2)
	if len(got) != 3 || got[2].Status != schema.FindingResolved {
		t.Fatalf("back to normal: %+v", got)
	}
	// The ruleset is reloaded: counters restart, nothing fires.
	packets = 0
	read(9, 1)
	read(10, 1)
	if len(got) != 3 {
		t.Errorf("a counter reset fired: %+v", got[3:])
	}
}

func TestDropRateWarmsUpAndHonoursMinRate(t *testing.T) {
	var got []schema.Finding
	d, _ := NewDropRate(DefaultDropRateConfig(), FindingFunc(func(f schema.Finding) { got = append(got, f) }), nil)
	t0 := time.Now()
	obs := func(i int, p uint64) {
		d.Observe([]schema.CounterSample{{Time: t0.Add(time.Duration(i) * time.Second), Node: "n", Family: "inet", Table: "t", Chain: "c", Handle: 1, Drop: true, Packets: p}})
	}
	obs(0, 0)
	obs(1, 500) // a big first rate is learned, not fired on
	if len(got) != 0 {
		t.Errorf("fired during warm-up: %+v", got)
	}
	d, _ = NewDropRate(DefaultDropRateConfig(), FindingFunc(func(f schema.Finding) { got = append(got, f) }), nil)
	for i, p := range []uint64{0, 1, 2, 3, 7} { // 1/s, then 4/s: 4× the baseline but under MinRate 5
		obs(i, p)
	}
	if len(got) != 0 {
		t.Errorf("fired under the minimum rate: %+v", got)
	}
	obs(5, 15) // 8/s: over both (the 4/s reading raised the baseline to 1.6, threshold 6.4)
	if len(got) != 1 {
		t.Errorf("8/s over a baseline of 1.6/s did not fire: %+v", got)
	}
	if _, err := NewDropRate(DropRateConfig{Factor: 1}, nil, nil); err == nil {
		t.Error("factor 1 accepted")
	}
}
