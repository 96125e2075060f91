package analyze

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// sliceHistory is a History over recorded slices.
type sliceHistory struct {
	flows        []schema.Flow
	samples      []schema.CounterSample
	flowErr      error
	readCounters bool
}

func (h *sliceHistory) EachFlow(_ context.Context, fn func(*schema.Flow)) error {
	for i := range h.flows {
		fn(&h.flows[i])
	}
	return h.flowErr
}

func (h *sliceHistory) EachCounterSample(_ context.Context, fn func(schema.CounterSample)) error {
	h.readCounters = true
	for _, s := range h.samples {
		fn(s)
	}
	return nil
}

// TestDetectHistory: every stored flow reaches the engine, the last
// partial batch too (a metadata probe as the very last flow pages), and
// the counter readings feed the drop-rate detector, whose spike reaches
// the sink; the counts are what was read.
func TestDetectHistory(t *testing.T) {
	const n = 2*historyBatch + 7
	h := &sliceHistory{}
	for i := range n {
		dst := "1.1.1.1"
		if i == n-1 {
			dst = "169.254.169.254"
		}
		h.flows = append(h.flows, podFlow("shop", "web", t0.Add(time.Duration(i)*100*time.Millisecond), dst))
	}
	var packets uint64
	for i, rate := range []uint64{2, 2, 2, 2, 2, 2, 60} {
		packets += rate * 15
		h.samples = append(h.samples, schema.CounterSample{Time: t0.Add(time.Duration(i) * 15 * time.Second), Node: "node-1", Family: "inet",
			Table: "flowwarden", Chain: "input", Handle: 42, Comment: "flowwarden: not observed", Drop: true, Packets: packets})
	}
	var c Collector
	eng, err := NewEngine(DefaultConfig(), &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	flows, counters, err := DetectHistory(context.Background(), eng, DefaultDropRateConfig(), &c, h)
	if err != nil || flows != n || counters != len(h.samples) {
		t.Fatalf("read %d flows, %d readings, err %v; want %d and %d", flows, counters, err, n, len(h.samples))
	}
	byDetector := map[string]schema.Finding{}
	for _, f := range c.Findings() {
		byDetector[f.Detector] = f
	}
	if f, ok := byDetector[DetectorMetadataAccess]; !ok || f.Evidence.Flows != 1 || f.Workload != "web" {
		t.Errorf("the probe in the last partial batch: %+v", f)
	}
	if f, ok := byDetector[DropRateDetector]; !ok || f.Status != schema.FindingOpen || f.Evidence.Observed != 60 {
		t.Errorf("the drop spike in the counter readings: %+v", f)
	}

	bad := &sliceHistory{flows: h.flows[:3], samples: h.samples, flowErr: errors.New("connection reset")}
	if _, _, err := DetectHistory(context.Background(), eng, DefaultDropRateConfig(), &c, bad); err == nil || err.Error() != "connection reset" {
		t.Errorf("a failed read: %v", err)
	}
	if bad.readCounters {
		t.Error("counters read after the flows failed")
	}
	if _, _, err := DetectHistory(context.Background(), eng, DropRateConfig{}, &c, h); err == nil {
		t.Error("a bad drop-rate configuration was accepted")
	}
}
