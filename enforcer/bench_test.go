package enforcer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// syntheticTraffic feeds total flows among n workloads in namespaces
// namespaces to add, shaped like the published samples: pods with
// app/version labels and Cilium's namespace mirrors, each talking to 4
// fixed peers (a neighbour in its own namespace, two elsewhere, one outside
// the cluster) on one or two ports. every is called every million flows.
func syntheticTraffic(n, namespaces, total int, add func(*schema.Flow), every func()) {
	type wl struct {
		ep schema.Endpoint
		ip netip.Addr
	}
	ws := make([]wl, n)
	for i := range ws {
		ns := fmt.Sprintf("team-%02d", i%namespaces)
		name := fmt.Sprintf("svc-%04d", i)
		labels := map[string]string{"app": name, "version": "v1", "io.cilium.k8s.policy.cluster": "default",
			"io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": ns, "io.kubernetes.pod.namespace": ns}
		ws[i] = wl{ep: schema.Endpoint{Namespace: ns, Pod: name + "-7d9f8b6c5d-x2x9z", Workload: name, WorkloadKind: "Deployment", Labels: labels, Identity: uint32(10000 + i)},
			ip: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 10})}
	}
	world := schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var f schema.Flow
	for i := 0; i < total; i++ {
		si := (i * 7919) % n
		src := &ws[si]
		k := (i / n) % 4
		f = schema.Flow{Time: t0.Add(time.Duration(i) * time.Millisecond), Verdict: schema.VerdictForwarded, Protocol: "TCP",
			Src: src.ep, SrcIP: src.ip, DstPort: uint16(8080 + k%2)}
		if k == 3 {
			f.Dst, f.DstIP, f.DstPort = world, netip.AddrFrom4([4]byte{203, 0, byte(si % 7), byte(si % 200)}), 443
		} else {
			d := &ws[(si+namespaces*(k+1)+k)%n]
			f.Dst, f.DstIP = d.ep, d.ip
		}
		add(&f)
		if every != nil && i%1_000_000 == 0 {
			every()
		}
	}
}

// BenchmarkRecommend builds the graph from 10 million flows among 5,000
// workloads (syntheticTraffic), then generates and proves the policies.
// FW_BENCH_FLOWS overrides the flow count. Reports time per phase and the
// peak heap.
func BenchmarkRecommend(b *testing.B) {
	total := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("FW_BENCH_FLOWS")); err == nil && v > 0 {
		total = v
	}
	for it := 0; it < b.N; it++ {
		runtime.GC()
		var peak uint64
		sample := func() {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
		}
		start := time.Now()
		g := NewGraph()
		syntheticTraffic(5000, 100, total, g.Add, sample)
		graphTime := time.Since(start)
		res, err := Generate(g, DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		genTime := time.Since(start) - graphTime
		sample()
		v, err := Prove(g, res)
		if err != nil || len(v) != 0 {
			b.Fatalf("proof: %v, %d violations", err, len(v))
		}
		sample()
		b.ReportMetric(graphTime.Seconds(), "graph-s")
		b.ReportMetric(genTime.Seconds(), "generate-s")
		b.ReportMetric(time.Since(start).Seconds(), "total-s")
		b.ReportMetric(float64(total)/graphTime.Seconds(), "flows/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(len(g.Workloads)), "workloads")
		b.ReportMetric(float64(len(res.Policies)), "policies")
	}
}

// BenchmarkSemanticDiff times the diff between no policies and the
// recommendation (what serve's page and recommend --current compute) over
// equivalence classes, summarised, at 200, 1,000 and 5,000 workloads, and
// the pairwise diff at 200 workloads in the same run: each class size
// reports its time as a ratio to that (x-pairwise-200), its classes, and
// the peak heap sampled while it runs. Run it on one core: -cpu 1.
func BenchmarkSemanticDiff(b *testing.B) {
	setup := func(b *testing.B, n int) (*Graph, []networkingv1.NetworkPolicy) {
		g := NewGraph()
		syntheticTraffic(n, max(10, n/50), 40*n, g.Add, nil)
		res, err := Generate(g, DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		return g, res.Policies
	}
	// The baseline: the pairwise diff of 200 workloads.
	g200, p200 := setup(b, 200)
	start := time.Now()
	if _, err := semanticDiffPairwise(context.Background(), nil, p200, g200); err != nil {
		b.Fatal(err)
	}
	pairwise := time.Since(start)
	b.Run("pairwise/workloads=200", func(b *testing.B) {
		for it := 0; it < b.N; it++ {
			if _, err := semanticDiffPairwise(context.Background(), nil, p200, g200); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{200, 1000, 5000} {
		b.Run(fmt.Sprintf("classes/workloads=%d", n), func(b *testing.B) {
			g, after := setup(b, n)
			runtime.GC()
			b.ResetTimer()
			var sum DiffSummary
			var pc, qc int
			peak := heapPeak(func() {
				for it := 0; it < b.N; it++ {
					d, err := SemanticDiffClasses(context.Background(), nil, after, g)
					if err != nil {
						b.Fatal(err)
					}
					sum = d.Summarize()
					pc, qc = d.Classes()
				}
			})
			per := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(per.Seconds(), "s/diff")
			b.ReportMetric(per.Seconds()/pairwise.Seconds(), "x-pairwise-200")
			b.ReportMetric(float64(sum.Losses), "losses")
			b.ReportMetric(float64(pc), "peer-classes")
			b.ReportMetric(float64(qc), "port-classes")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// heapPeak runs fn and returns the highest heap in use sampled meanwhile.
func heapPeak(fn func()) uint64 {
	var peak uint64
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapInuse)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	fn()
	close(stop)
	<-done
	sample()
	return peak
}

// BenchmarkUsage times the least-privilege gap (what report and recommend
// --current compute): every rule of the policies in force (here the
// recommendation itself) measured against the observed edges.
func BenchmarkUsage(b *testing.B) {
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("workloads=%d", n), func(b *testing.B) {
			g := NewGraph()
			syntheticTraffic(n, n/20, 40*n, g.Add, nil)
			res, err := Generate(g, DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			var unused int
			for it := 0; it < b.N; it++ {
				u, err := Usage(res.Policies, g)
				if err != nil {
					b.Fatal(err)
				}
				unused = 0
				for _, r := range u {
					if r.Flows == 0 {
						unused++
					}
				}
			}
			b.ReportMetric(float64(unused), "unused-rules")
		})
	}
}

// BenchmarkBlastRadius times the blast radius of no policies and of the
// recommendation (what report, recommend and the page compute) at 1,000
// and 5,000 workloads, over classes.
func BenchmarkBlastRadius(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("workloads=%d", n), func(b *testing.B) {
			g := NewGraph()
			syntheticTraffic(n, max(10, n/50), 40*n, g.Add, nil)
			res, err := Generate(g, DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			var br *BlastRadius
			for it := 0; it < b.N; it++ {
				if br, err = ComputeBlastRadius(nil, res.Policies, g); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(br.ReductionPercent(), "reduction-%")
		})
	}
}
