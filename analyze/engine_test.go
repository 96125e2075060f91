package analyze

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/schema"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func podFlow(ns, workload string, at time.Time, dst string) schema.Flow {
	return schema.Flow{Time: at, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress, Protocol: "TCP",
		SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr(dst), DstPort: 80,
		Src: schema.Endpoint{Namespace: ns, Pod: workload + "-abc", Workload: workload, WorkloadKind: "Deployment"},
		Dst: schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}}
}

// A metadata probe pages at once (early firing), not when its window ends.
func TestMetadataFiresOnFirstFlow(t *testing.T) {
	var c Collector
	e, err := NewEngine(DefaultConfig(), &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Write(context.Background(), podFlow("shop", "web", t0.Add(10*time.Second), "169.254.169.254"))
	got := c.Findings()
	if len(got) != 1 || got[0].Detector != DetectorMetadataAccess || got[0].Severity != schema.SeverityCritical || got[0].Status != schema.FindingOpen {
		t.Fatalf("after one probe: %+v", got)
	}
	if got[0].Evidence.Flows != 1 || len(got[0].Evidence.Samples) != 1 {
		t.Fatalf("evidence %+v", got[0].Evidence)
	}
	// Quiet for resolveAfter windows: resolved.
	_ = e.Write(context.Background(), podFlow("shop", "web", t0.Add(10*time.Minute), "1.1.1.1"))
	if got := c.Findings(); got[0].Status != schema.FindingResolved || got[0].Evidence.Flows != 1 {
		t.Fatalf("after quiet windows: %+v", got[0])
	}
}

// The metadata-access finding names its flows by the same selector on
// every run: the configured names in a fixed order, not a map's.
func TestMetadataSelectorIsStable(t *testing.T) {
	var first *schema.FlowSelector
	for i := range 20 {
		var c Collector
		e, err := NewEngine(DefaultConfig(), &c, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = e.Write(context.Background(), podFlow("shop", "web", t0.Add(10*time.Second), "169.254.169.254"))
		got := c.Findings()
		if len(got) != 1 || got[0].Flows == nil {
			t.Fatalf("run %d: %+v", i, got)
		}
		if first == nil {
			first = got[0].Flows
			continue
		}
		if !reflect.DeepEqual(first, got[0].Flows) {
			t.Fatalf("run %d selects the flows by\n%+v\nrun 0 by\n%+v", i, got[0].Flows, first)
		}
	}
}

// Keys beyond MaxKeys are evicted, counted, and memory stays bounded.
func TestKeysAreBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxKeys = 100
	m := NewMetrics(nil)
	e, err := NewEngine(cfg, &Collector{}, m)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		_ = e.Write(context.Background(), podFlow(fmt.Sprintf("ns%d", i), "w", t0.Add(time.Duration(i)*time.Millisecond), "1.1.1.1"))
	}
	for _, d := range e.detectors {
		if d.Keys() > 100 {
			t.Errorf("%s tracks %d keys, limit 100", d.Name(), d.Keys())
		}
	}
	if n := testutil.ToFloat64(m.Evictions.WithLabelValues(DetectorEgressSpike)); n != 900 {
		t.Errorf("egress-spike evictions %v, want 900", n)
	}
}

// Event time: the same flows give the same findings however they are
// batched, and wherever they sit against the wall clock: moved 30 years
// into the past or the future, the findings are the same, moved by as much
// (a window closed on wall time would close every window at once for the
// past copy and none for the future one).
func TestFindingsDependOnEventTimeOnly(t *testing.T) {
	flows := scenarioFlows(t, "cross-namespace-scan")
	run := func(batch int, shift time.Duration) []schema.Finding {
		moved := make([]schema.Flow, len(flows))
		for i, f := range flows {
			f.Time = f.Time.Add(shift)
			moved[i] = f
		}
		var c Collector
		e, err := NewEngine(DefaultConfig(), &c, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(moved); i += batch {
			_ = e.Write(context.Background(), moved[i:min(i+batch, len(moved))]...)
		}
		e.Flush()
		got := c.Findings()
		for i := range got {
			got[i].Start, got[i].End = got[i].Start.Add(-shift), got[i].End.Add(-shift)
			got[i].Evidence.Samples = slices.Clone(got[i].Evidence.Samples)
			for j := range got[i].Evidence.Samples {
				got[i].Evidence.Samples[j].Time = got[i].Evidence.Samples[j].Time.Add(-shift)
			}
		}
		return got
	}
	a, b := run(1, 0), run(997, 0)
	if len(a) != 3 || !reflect.DeepEqual(a, b) {
		t.Fatalf("one flow at a time: %d findings; batches of 997: %d; equal: %v", len(a), len(b), reflect.DeepEqual(a, b))
	}
	// The selector of the flows names the (moved) time range; the rest
	// must match.
	noQuery := func(fs []schema.Finding) []schema.Finding {
		out := slices.Clone(fs)
		for i := range out {
			if out[i].Query != "" {
				t.Fatalf("a detector wrote SQL: %s", out[i].Query)
			}
			if out[i].Flows == nil {
				t.Fatalf("%s finding names no flows", out[i].Detector)
			}
			out[i].Flows = nil
		}
		return out
	}
	const years30 = 30 * 365 * 24 * time.Hour
	for _, shift := range []time.Duration{-years30, years30} {
		if got := run(1, shift); !reflect.DeepEqual(noQuery(got), noQuery(a)) {
			t.Fatalf("flows moved by %v: %d findings differ from the same flows unmoved (%d):\n%+v\nvs\n%+v", shift, len(got), len(a), got, a)
		}
	}
}

// TestConfigValidation: the defaults are valid; each fault alone is
// refused, by Validate and by NewEngine, with an error naming its field;
// the values at the edge of each bound are accepted.
func TestConfigValidation(t *testing.T) {
	def := DefaultConfig()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, c := range []struct {
		field string
		fault func(*Config)
		ok    bool
	}{
		{"maxKeys", func(c *Config) { c.MaxKeys = 0 }, false},
		{"egressSpike.window", func(c *Config) { c.EgressSpike.Window = 0 }, false},
		{"denialRate.window", func(c *Config) { c.DenialRate.Window = -time.Second }, false},
		{"metadataAccess.addresses", func(c *Config) { c.MetadataAccess.Addresses = append(c.MetadataAccess.Addresses, "not-an-ip") }, false},
		{"egressSpike", func(c *Config) { c.EgressSpike.Factor = 0.5 }, false},
		{"egressSpike", func(c *Config) { c.EgressSpike.Factor = 1 }, false},
		{"egressSpike", func(c *Config) { c.EgressSpike.CriticalFactor = c.EgressSpike.Factor - 0.1 }, false},
		{"egressSpike", func(c *Config) { c.EgressSpike.CriticalFactor = c.EgressSpike.Factor }, true},
		{"denialRate.minShare", func(c *Config) { c.DenialRate.MinShare = 0 }, false},
		{"denialRate.minShare", func(c *Config) { c.DenialRate.MinShare = 1.01 }, false},
		{"denialRate.minShare", func(c *Config) { c.DenialRate.MinShare = 1 }, true},
	} {
		cfg := DefaultConfig()
		c.fault(&cfg)
		err := cfg.Validate()
		_, nerr := NewEngine(cfg, &Collector{}, nil)
		switch {
		case c.ok && (err != nil || nerr != nil):
			t.Errorf("%s at its bound refused: %v / %v", c.field, err, nerr)
		case !c.ok && (err == nil || nerr == nil):
			t.Errorf("%s: the fault alone was accepted (Validate: %v, NewEngine: %v)", c.field, err, nerr)
		case !c.ok && !strings.Contains(err.Error(), c.field):
			t.Errorf("%s: the error does not name the field: %v", c.field, err)
		}
	}
}

// scenarioFlows reads a seed scenario's flow fixture (the flows ingest
// decodes from its Hubble file: see TestScenarios).
func scenarioFlows(t testing.TB, name string) []schema.Flow {
	t.Helper()
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, name+".flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return flows
}

// BenchmarkEngine pushes replayed real flows (the busy-day scenario, each
// pass an hour later) through all detectors on one goroutine.
func BenchmarkEngine(b *testing.B) {
	flows := scenarioFlows(b, "benign-busy-day")
	var c Collector
	e, _ := NewEngine(DefaultConfig(), &c, nil)
	benchFlows(b, e, flows)
}

// cpuTime is the CPU time this process has used (user and system, all
// threads, GC included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports flows per CPU-second: on a shared, busy machine wall
// time measures the neighbours; CPU time is what one core gives the engine.
func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(b.N)/(cpuTime()-since).Seconds(), "flows/cpu-s")
}

// BenchmarkMemoryPerKey measures the heap each tracked workload costs
// across all detectors.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 50000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		e, _ := NewEngine(DefaultConfig(), &Collector{}, nil)
		for k := 0; k < keys; k++ {
			_ = e.Write(context.Background(), podFlow("ns", fmt.Sprintf("workload-%d", k), t0.Add(time.Duration(k)*time.Microsecond), "10.1.1.1"))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(e.Keys()), "bytes/key")
		runtime.KeepAlive(e)
	}
}
