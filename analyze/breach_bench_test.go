package analyze

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowwarden/flowwarden/schema"
)

// nonDNS returns the flows of a scenario that are not DNS lookups.
func nonDNS(flows []schema.Flow) []schema.Flow {
	var out []schema.Flow
	for _, f := range flows {
		if f.L7Type != "dns" {
			out = append(out, f)
		}
	}
	return out
}

// shifted replays flows h hours later.
func shifted(flows []schema.Flow, h int) []schema.Flow {
	out := append([]schema.Flow(nil), flows...)
	for i := range out {
		out[i].Time = out[i].Time.Add(time.Duration(h) * time.Hour)
	}
	return out
}

// With every detector on, a flow that is not a DNS lookup costs no
// allocation once its keys are known: an hour of the breach look-alikes
// (TCP, replies, scrapes, Envoy requests) replayed an hour later.
func TestNonDNSFlowsDoNotAllocate(t *testing.T) {
	flows := nonDNS(breachFlows(t, "breach-lookalikes"))
	e, err := NewEngine(breachConfig(t), &Collector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, f := range shifted(flows, 0) {
		_ = e.Write(ctx, f)
	}
	passes := []([]schema.Flow){shifted(flows, 1), shifted(flows, 2), shifted(flows, 3)}
	run := 0
	allocs := testing.AllocsPerRun(len(passes)-1, func() {
		for i := range passes[run] {
			_ = e.Write(ctx, passes[run][i:i+1]...)
		}
		run++
	})
	if perFlow := allocs / float64(len(flows)); perFlow > 0 {
		t.Errorf("%.0f allocations per pass of %d non-DNS flows (%.4f per flow), want 0", allocs, len(flows), perFlow)
	}
}

// The engine's mTLS coverage and the DNS visibility gauge.
func TestBreachMetrics(t *testing.T) {
	flows := breachFlows(t, "plaintext-in-mesh")
	m := NewMetrics(nil)
	e, err := NewEngine(breachConfig(t), &Collector{}, m)
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Write(t.Context(), flows...)
	e.AdvanceTo(flows[len(flows)-1].Time.Add(time.Minute))
	var secured, total float64
	for _, f := range flows {
		if f.Source == schema.SourceEnvoy && f.Dst.Namespace == "payments" {
			total++
			if f.MTLS {
				secured++
			}
		}
	}
	if got := testutil.ToFloat64(m.MTLSCoverage.WithLabelValues("payments")); got != secured/total || total == 0 {
		t.Errorf("payments coverage %v, want %v/%v", got, secured, total)
	}
	if got := testutil.ToFloat64(m.MeshRequests.WithLabelValues("payments", "false")); got != total-secured {
		t.Errorf("plaintext requests into payments %v, want %v", got, total-secured)
	}
	cov := e.MTLSCoverage()
	if fmt.Sprint(cov) != fmt.Sprint(MTLSCoverageOf(flows)) || len(cov) != 2 {
		t.Errorf("Engine.MTLSCoverage %+v, MTLSCoverageOf %+v", cov, MTLSCoverageOf(flows))
	}
	// frontend, media, cart, checkout, prometheus, uptime-prober ask DNS.
	if got := testutil.ToFloat64(m.DNSVisibleWorkloads); got != 6 {
		t.Errorf("DNS visible for %v workloads, want 6", got)
	}
}

// BenchmarkDNSHeavy pushes the DNS-tunnel scenario's DNS lookups alone (a
// tunnel, search-path expansions, CDN names, pod names) through all
// detectors: the DNS detector's throughput on DNS-heavy traffic.
func BenchmarkDNSHeavy(b *testing.B) {
	var flows []schema.Flow
	for _, f := range breachFlows(b, "dns-tunnel-fast") {
		if f.L7Type == "dns" {
			flows = append(flows, f)
		}
	}
	e, _ := NewEngine(DefaultConfig(), &Collector{}, nil)
	benchFlows(b, e, flows)
}

// BenchmarkBreachLookalikes: every detector over the non-DNS flows of the
// look-alike hour (scrapes, replies, Envoy requests).
func BenchmarkBreachLookalikes(b *testing.B) {
	flows := nonDNS(breachFlows(b, "breach-lookalikes"))
	e, _ := NewEngine(breachConfig(b), &Collector{}, nil)
	benchFlows(b, e, flows)
}

func benchFlows(b *testing.B, e *Engine, flows []schema.Flow) {
	batch := make([]schema.Flow, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; {
		batch = batch[:0]
		for j := 0; j < cap(batch) && i < b.N; j++ {
			f := flows[i%len(flows)]
			f.Time = f.Time.Add(time.Duration(i/len(flows)) * time.Hour)
			batch = append(batch, f)
			i++
		}
		_ = e.Write(b.Context(), batch...)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	reportCPU(b, cpu0)
}

// BenchmarkBreachMemoryPerKey measures the heap one tracked key costs in
// each new detector, with only that detector on: a dns-tunnel workload
// with its four domains in use, a lateral-scan workload with its pair
// bitmaps, a beacon (workload, destination) with its ring, a
// plaintext-in-mesh destination workload.
func BenchmarkBreachMemoryPerKey(b *testing.B) {
	const keys = 20000
	only := func(set func(c *Config)) Config {
		c := DefaultConfig()
		c.MetadataAccess.Enabled, c.EgressSpike.Enabled, c.EgressDenialSpike.Enabled = false, false, false
		c.CrossNamespaceDeny.Enabled, c.DenialRate.Enabled = false, false
		c.DNSTunnel.Enabled, c.LateralScan.Enabled, c.Beacon.Enabled, c.PlaintextInMesh.Enabled = false, false, false, false
		c.MaxKeys = keys
		set(&c)
		return c
	}
	g := newBreachGen(1)
	for _, c := range []struct {
		name string
		cfg  Config
		flow func(k int) []schema.Flow
	}{
		{DetectorDNSTunnel, only(func(c *Config) { c.DNSTunnel.Enabled = true }), func(k int) []schema.Flow {
			var out []schema.Flow
			src := podEP("ns", fmt.Sprintf("w-%d", k), "10.0.1.1", 1)
			for d := 0; d < 4; d++ {
				g.out = g.out[:0]
				g.dns(breachStart.Add(time.Duration(k)*time.Microsecond), src, fmt.Sprintf("x%d.domain-%d.com.", k, d), 0)
				out = append(out, g.out[0])
			}
			return out
		}},
		{DetectorLateralScan, only(func(c *Config) { c.LateralScan.Enabled = true }), func(k int) []schema.Flow {
			f := podFlow("ns", fmt.Sprintf("w-%d", k), breachStart.Add(time.Duration(k)*time.Microsecond), "10.1.1.1")
			f.Dst = schema.Endpoint{Namespace: "db", Workload: "pg", WorkloadKind: "StatefulSet"}
			return []schema.Flow{f}
		}},
		{DetectorBeacon, only(func(c *Config) { c.Beacon.Enabled = true }), func(k int) []schema.Flow {
			f := podFlow("ns", fmt.Sprintf("w-%d", k), breachStart.Add(time.Duration(k)*time.Microsecond), "203.0.113.1")
			f.TCPFlags = "SYN"
			return []schema.Flow{f}
		}},
		{DetectorPlaintextInMesh, only(func(c *Config) { c.PlaintextInMesh.Enabled = true; c.PlaintextInMesh.StrictNamespaces = []string{"ns"} }), func(k int) []schema.Flow {
			d := podEP("ns", fmt.Sprintf("w-%d", k), "10.0.3.1", 1)
			g.out = g.out[:0]
			g.envoy(breachStart.Add(time.Duration(k)*time.Microsecond), g.frontend, d, 8080, k%2 == 0, "/")
			return []schema.Flow{g.out[0]}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var flows []schema.Flow
			for k := 0; k < keys; k++ {
				flows = append(flows, c.flow(k)...)
			}
			for i := 0; i < b.N; i++ {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				e, _ := NewEngine(c.cfg, &Collector{}, nil)
				_ = e.Write(b.Context(), flows...)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(e.Keys()), "bytes/key")
				runtime.KeepAlive(e)
				runtime.KeepAlive(flows)
			}
		})
	}
}
