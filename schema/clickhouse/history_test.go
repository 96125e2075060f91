package clickhouse_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// TestHistoryFeedsTheDetectors: History reads the flows and counter
// readings of its window only, every column, oldest first, and is what
// analyze.DetectHistory runs the detectors over (detect --since): a stored
// metadata probe inside the window pages, one outside does not count.
func TestHistoryFeedsTheDetectors(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migrated(t, clickhouse.SchemaConfig{})
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	probe := func(at time.Time, pod string) schema.Flow {
		f := everyField(at)
		f.Verdict, f.IsReply, f.Direction = schema.VerdictForwarded, false, schema.DirectionEgress
		f.Src.Pod, f.Src.WorkloadKind = pod, "Deployment"
		f.Dst = schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved}
		f.DstIP = netip.MustParseAddr("169.254.169.254")
		return f
	}
	flows := []schema.Flow{probe(t0.Add(-time.Second), "early"), probe(t0.Add(2*time.Second), "second"), probe(t0.Add(time.Second), "first"), probe(t0.Add(time.Minute), "late")}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	var samples []schema.CounterSample
	for i := range 4 {
		samples = append(samples, schema.CounterSample{Time: t0.Add(time.Duration(i*30-30) * time.Second), Node: "node-1", Family: "inet",
			Table: "flowwarden", Chain: "input", Handle: 42, Drop: true, Packets: uint64(i * 10)})
	}
	if err := clickhouse.InsertCounters(ctx, conn, samples); err != nil {
		t.Fatal(err)
	}

	h := clickhouse.History{Conn: conn, From: t0, To: t0.Add(time.Minute)}
	var pods []string
	if err := h.EachFlow(ctx, func(f *schema.Flow) {
		pods = append(pods, f.Src.Pod)
		if f.TraceID == "" || f.HTTPPath == "" {
			t.Errorf("flow read without its other columns: %+v", f)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 || pods[0] != "first" || pods[1] != "second" {
		t.Errorf("flows in [t0, t0+1m): %v, want first, second", pods)
	}
	var readings []uint64
	if err := h.EachCounterSample(ctx, func(s schema.CounterSample) { readings = append(readings, s.Packets) }); err != nil {
		t.Fatal(err)
	}
	if len(readings) != 2 || readings[0] != 10 || readings[1] != 20 {
		t.Errorf("counter readings in [t0, t0+1m): %v, want 10, 20", readings)
	}

	var found analyze.Collector
	eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, counters, err := analyze.DetectHistory(ctx, eng, analyze.DefaultDropRateConfig(), &found, h)
	if err != nil || n != 2 || counters != 2 {
		t.Fatalf("DetectHistory: %d flows, %d readings, %v", n, counters, err)
	}
	eng.Flush()
	var probes uint64
	for _, f := range found.Findings() {
		if f.Detector == analyze.DetectorMetadataAccess {
			probes += f.Evidence.Flows
		}
	}
	if probes != 2 {
		t.Errorf("metadata probes counted %d, want the 2 in the window: %+v", probes, found.Findings())
	}
}
