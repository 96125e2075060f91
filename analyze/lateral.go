package analyze

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// DetectorLateralScan names the lateral-scan detector.
const DetectorLateralScan = "lateral-scan"

// LateralScanConfig: a workload touching many more distinct (address, port)
// pairs inside the cluster than it usually does, failed probes weighing more.
type LateralScanConfig struct {
	Enabled       bool          `json:"enabled"`
	Window        time.Duration `json:"window"`
	ResolveAfter  int           `json:"resolveAfter"`
	WarmupWindows int           `json:"warmupWindows"`
	// FailureWeight is the weight of a pair whose probe failed (a SYN
	// nobody answered, an RST answer, a drop); an answered pair weighs 1.
	FailureWeight float64 `json:"failureWeight"`
	// MinScore is the weighted pair count that fires, Factor the multiple
	// of the workload's baseline it must also reach.
	MinScore float64 `json:"minScore"`
	Factor   float64 `json:"factor"`
	// MinFailed distinct failed pairs are needed: fan-out that is answered
	// (a scraper, a client of many replicas) is not a scan.
	MinFailed float64 `json:"minFailed"`
	// MinForwarded distinct pairs must have been let through: a scan that
	// policy drops entirely is egress-denial-spike's and
	// cross-namespace-denial's finding.
	MinForwarded float64 `json:"minForwarded"`
}

func defaultLateralScan() LateralScanConfig {
	return LateralScanConfig{Enabled: true, Window: time.Minute, ResolveAfter: 3, WarmupWindows: 5,
		FailureWeight: 4, MinScore: 150, Factor: 5, MinFailed: 25, MinForwarded: 10}
}

func (c *LateralScanConfig) validate() error {
	if c.FailureWeight < 1 || c.MinScore <= 0 || c.Factor <= 1 {
		return errors.New("lateralScan: need failureWeight >= 1, minScore > 0, factor > 1")
	}
	return nil
}

const pairWords = 16 // 1024-bit bitmaps: linear counting up to a few thousand pairs

// pairSketch holds a window's (address, port) pairs as bitmaps, one bit per
// hashed pair: touched, sent a bare SYN, answered, answered with RST,
// dropped, let through. Linear counting turns them into distinct counts in
// constant memory.
type pairSketch struct {
	touched, syn, answered, rst, dropped, passed [pairWords]uint64
}

func (p *pairSketch) reset() { *p = pairSketch{} }

func pairBit(a [16]byte, port uint16) (int, uint64) {
	h := uint64(14695981039346656037)
	for _, b := range a {
		h ^= uint64(b)
		h *= 1099511628211
	}
	h ^= uint64(port)
	h *= 1099511628211
	h ^= h >> 29
	return int(h>>6) % pairWords, 1 << (h & 63)
}

// linearCount estimates the distinct items behind a bitmap with z of m bits clear.
func linearCount(set int) float64 {
	const m = pairWords * 64
	if set >= m {
		return m * math.Log(m)
	}
	return -m * math.Log(float64(m-set)/m)
}

// estimate returns the distinct pairs touched, failed and let through.
func (p *pairSketch) estimate() (touched, failed, passed float64) {
	var nt, nf, np int
	for i := 0; i < pairWords; i++ {
		nt += bits.OnesCount64(p.touched[i])
		nf += bits.OnesCount64(p.syn[i]&^p.answered[i] | p.rst[i] | p.dropped[i])
		np += bits.OnesCount64(p.passed[i])
	}
	return linearCount(nt), linearCount(nf), linearCount(np)
}

func newLateralScan(c LateralScanConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	t := newTracker(DetectorLateralScan, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	score := func(w *window) (s, touched, failed, passed float64) {
		if w.pairs == nil {
			return 0, 0, 0, 0
		}
		touched, failed, passed = w.pairs.estimate()
		return touched + (c.FailureWeight-1)*failed, touched, failed, passed
	}
	t.baselineOf = func(w *window) float64 { s, _, _, _ := score(w); return s }
	t.judge = func(st *keyState, w *window) verdict {
		s, _, failed, passed := score(w)
		v := verdict{metric: "weighted distinct in-cluster (address, port) pairs", observed: s, baseline: st.base, severity: schema.SeverityCritical}
		if !t.warmedUp(st, c.WarmupWindows) {
			return v
		}
		v.threshold = max(c.MinScore, c.Factor*st.base)
		v.fire = s >= v.threshold && failed >= c.MinFailed && passed >= c.MinForwarded
		return v
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%s/%s probed about %.0f weighted (address, port) pairs inside the cluster in %s (baseline %.1f; failed probes count %.0fx)",
			st.subj.namespace, st.subj.workload, v.observed, c.Window, v.baseline, c.FailureWeight)
	}
	t.where = func(st *keyState) []schema.Cond {
		ns, wl := st.subj.namespace, st.subj.workload
		notWorld := worldCondition
		notWorld.Not = true
		inRange := func(cidr string) []schema.Cond {
			return []schema.Cond{{Field: "dst_addr", Op: schema.OpInPrefix, Values: []string{cidr}}}
		}
		return []schema.Cond{
			schema.AnyOf(
				[]schema.Cond{schema.Eq("src_namespace", ns), schema.Eq("src_workload", wl), schema.IsFalse("is_reply")},
				[]schema.Cond{schema.Eq("dst_namespace", ns), schema.Eq("dst_workload", wl), schema.IsTrue("is_reply")}),
			schema.AnyOf([]schema.Cond{notWorld}, inRange("10.0.0.0/8"), inRange("172.16.0.0/12"), inRange("192.168.0.0/16"),
				[]schema.Cond{schema.IsTrue("is_reply")}),
		}
	}
	d := &detector{tracker: t}
	d.observe = func(f *schema.Flow) {
		ep, other, addr, port := &f.Src, &f.Dst, f.DstIP, f.DstPort
		if f.IsReply {
			ep, other, addr, port = &f.Dst, &f.Src, f.SrcIP, f.SrcPort
		}
		// Inside: a cluster identity, or a private address (Cilium names
		// an unused pod address, the usual scan target, world).
		if ep.Namespace == "" || ep.WorkloadKind == schema.KindReserved || !addr.IsValid() || other.IsWorld() && !addr.Unmap().IsPrivate() {
			return
		}
		peer := addr.As16()
		st := t.state(key{ep.Namespace, ep.Workload}, subject{namespace: ep.Namespace, workload: ep.Workload}, f.Time)
		if st.cur.pairs == nil {
			st.cur.pairs = &pairSketch{}
		}
		p := st.cur.pairs
		i, b := pairBit(peer, port)
		fresh := false
		if f.IsReply {
			if strings.Contains(f.TCPFlags, "RST") {
				fresh = p.rst[i]&b == 0
				p.rst[i] |= b
			} else {
				p.answered[i] |= b
			}
			t.add(st, f, false)
		} else {
			fresh = p.touched[i]&b == 0
			p.touched[i] |= b
			switch {
			case f.Verdict == schema.VerdictDropped:
				fresh = fresh || p.dropped[i]&b == 0
				p.dropped[i] |= b
			default:
				p.passed[i] |= b
			}
			if f.TCPFlags == "SYN" {
				p.syn[i] |= b
			}
			t.add(st, f, true)
		}
		if fresh && st.open == nil {
			if v := t.judge(st, &st.cur); v.fire {
				t.fireEarly(st, v)
			}
		}
	}
	return d
}
