package analyze

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Detector names: the alertname of their alerts is derived from them.
const (
	DetectorMetadataAccess     = "metadata-access"
	DetectorEgressSpike        = "egress-spike"
	DetectorEgressDenialSpike  = "egress-denial-spike"
	DetectorCrossNamespaceDeny = "cross-namespace-denial"
	DetectorDenialRate         = "denial-rate"
)

// detector adapts a tracker plus a per-flow rule to the Detector interface.
type detector struct {
	*tracker
	observe func(f *schema.Flow)
}

func (d *detector) Name() string           { return d.name }
func (d *detector) Observe(f *schema.Flow) { d.observe(f) }
func (d *detector) Advance(now time.Time)  { d.advance(now) }
func (d *detector) Flush()                 { d.flush() }
func (d *detector) Keys() int              { return d.keys() }

// isPodSource reports whether a flow is initiated by a pod (not a reply, and
// not from the host or the world).
func isPodSource(f *schema.Flow) bool {
	return !f.IsReply && f.Src.Namespace != "" && f.Src.WorkloadKind != schema.KindReserved
}

func workloadKey(f *schema.Flow) (key, subject) {
	return key{f.Src.Namespace, f.Src.Workload}, subject{namespace: f.Src.Namespace, workload: f.Src.Workload}
}

// bySourceWorkload makes a detector keyed by the source workload of flows
// from pods: count says whether a flow counts and whether it matches (what
// the judge weighs); the finding selects that workload's flows with conds.
func bySourceWorkload(t *tracker, count func(*schema.Flow) (counted, matched bool), conds ...schema.Cond) *detector {
	t.where = func(st *keyState) []schema.Cond {
		return append([]schema.Cond{schema.Eq("src_namespace", st.subj.namespace), schema.Eq("src_workload", st.subj.workload)}, conds...)
	}
	d := &detector{tracker: t}
	d.observe = func(f *schema.Flow) {
		if !isPodSource(f) {
			return
		}
		counted, matched := count(f)
		if !counted {
			return
		}
		k, s := workloadKey(f)
		t.add(t.state(k, s, f.Time), f, matched)
	}
	return d
}

func isDenied(f *schema.Flow) bool {
	return f.Verdict == schema.VerdictDropped
}

func isPolicyDenial(f *schema.Flow) bool {
	return f.Verdict == schema.VerdictDropped && (f.DropReason == "POLICY_DENIED" || f.DropReason == "POLICY_DENY" || f.DropReason == "")
}

// --- metadata-access ---------------------------------------------------------

func newMetadataAccess(c MetadataAccessConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	addrs := map[netip.Addr]bool{}
	for _, a := range c.Addresses {
		addrs[netip.MustParseAddr(a).Unmap()] = true
	}
	names := map[string]bool{}
	for _, n := range c.Names {
		names[strings.TrimSuffix(strings.ToLower(n), ".")] = true
	}
	matches := func(f *schema.Flow) bool {
		if addrs[f.DstIP] {
			return true
		}
		for _, n := range f.DstNames {
			if names[strings.TrimSuffix(strings.ToLower(n), ".")] {
				return true
			}
		}
		return f.DNSQuery != "" && names[strings.TrimSuffix(strings.ToLower(f.DNSQuery), ".")]
	}
	t := newTracker(DetectorMetadataAccess, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	t.early = true
	t.judge = func(_ *keyState, w *window) verdict {
		return verdict{fire: w.matched > 0, severity: schema.SeverityCritical, metric: "flows", observed: float64(w.matched), threshold: 1}
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%s/%s reached for the cloud metadata service (%.0f flows in %s)", st.subj.namespace, st.subj.workload, v.observed, c.Window)
	}
	// In a stable order: a finding's query reads the same on every run.
	var nameList []string
	for _, n := range slices.Sorted(maps.Keys(names)) {
		nameList = append(nameList, n, n+".")
	}
	cond := schema.AnyOf(
		[]schema.Cond{{Field: "dst_ip", Op: schema.OpAddrIn, Values: c.Addresses}},
		[]schema.Cond{{Field: "dst_names", Op: schema.OpHasAny, Values: nameList}},
		[]schema.Cond{{Field: "dns_query", Op: schema.OpIn, Values: nameList}})
	return bySourceWorkload(t, func(f *schema.Flow) (bool, bool) { return matches(f), true }, schema.IsFalse("is_reply"), cond)
}

// --- egress-spike ---------------------------------------------------------------

func newEgressSpike(c EgressSpikeConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	t := newTracker(DetectorEgressSpike, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	t.early = true
	// The metric is bytes when the source reports them (Envoy, conntrack),
	// else flows (Hubble).
	metricOf := func(w *window) (float64, string, float64) {
		if w.bytes > 0 {
			return float64(w.bytes), "bytes", float64(c.MinBytes)
		}
		return float64(w.matched), "flows", float64(c.MinFlows)
	}
	t.baselineOf = func(w *window) float64 { x, _, _ := metricOf(w); return x }
	t.judge = func(st *keyState, w *window) verdict {
		x, metric, floor := metricOf(w)
		v := verdict{metric: metric, observed: x, baseline: st.base}
		if !t.warmedUp(st, c.WarmupWindows) {
			return v
		}
		v.threshold = max(floor, c.Factor*st.base)
		critical := max(floor, c.CriticalFactor*st.base)
		if metric == "flows" {
			critical = max(critical, float64(c.CriticalMinFlows))
		}
		switch {
		case x >= critical:
			v.fire, v.severity = true, schema.SeverityCritical
		case x >= v.threshold:
			v.fire, v.severity = true, schema.SeverityWarning
		}
		return v
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%s/%s sent %.0f %s out of the cluster in %s (baseline %.1f)", st.subj.namespace, st.subj.workload,
			v.observed, v.metric, c.Window, v.baseline)
	}
	// Every pod source is counted, so that a workload that never talked to
	// the world has a baseline of zero rather than none.
	return bySourceWorkload(t, func(f *schema.Flow) (bool, bool) { return true, f.Dst.IsWorld() }, schema.IsFalse("is_reply"), worldCondition)
}

// worldCondition selects flows whose destination is outside the cluster.
var worldCondition = schema.AnyOf(
	[]schema.Cond{schema.Eq("dst_workload_kind", "reserved"), {Field: "dst_workload", Op: schema.OpPrefix, Values: []string{"world"}}},
	[]schema.Cond{{Field: "dst_identity", Op: schema.OpNumEq, Values: []string{"2"}}},
	[]schema.Cond{{Field: "dst_identity", Op: schema.OpNumGE, Values: []string{"16777216"}}})

// --- egress-denial-spike -----------------------------------------------------------

func newEgressDenialSpike(c EgressDenialSpikeConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	t := newTracker(DetectorEgressDenialSpike, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	t.early = true
	t.judge = func(_ *keyState, w *window) verdict {
		return verdict{fire: w.matched >= c.MinDropped, severity: schema.SeverityCritical, metric: "dropped flows",
			observed: float64(w.matched), threshold: float64(c.MinDropped)}
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%s/%s had %.0f egress flows dropped in %s", st.subj.namespace, st.subj.workload, v.observed, c.Window)
	}
	return bySourceWorkload(t, func(f *schema.Flow) (bool, bool) {
		return isDenied(f) && f.Direction == schema.DirectionEgress, true
	}, schema.Eq("verdict", "DROPPED"), schema.Eq("direction", "EGRESS"))
}

// --- cross-namespace-denial ------------------------------------------------------

func newCrossNamespaceDenial(c CrossNamespaceDenyConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	t := newTracker(DetectorCrossNamespaceDeny, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	t.early = true
	t.judge = func(_ *keyState, w *window) verdict {
		return verdict{fire: w.matched >= c.MinDenied, severity: schema.SeverityWarning, metric: "denied flows",
			observed: float64(w.matched), threshold: float64(c.MinDenied)}
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("policy denied %.0f flows from namespace %s to namespace %s in %s", v.observed, st.subj.namespace, st.subj.peer, c.Window)
	}
	t.where = func(st *keyState) []schema.Cond {
		return []schema.Cond{schema.Eq("src_namespace", st.subj.namespace), schema.Eq("dst_namespace", st.subj.peer), schema.Eq("verdict", "DROPPED")}
	}
	d := &detector{tracker: t}
	d.observe = func(f *schema.Flow) {
		if f.IsReply || !isPolicyDenial(f) || f.Src.Namespace == "" || f.Dst.Namespace == "" || f.Src.Namespace == f.Dst.Namespace {
			return
		}
		k := key{f.Src.Namespace, f.Dst.Namespace}
		t.add(t.state(k, subject{namespace: f.Src.Namespace, peer: f.Dst.Namespace}, f.Time), f, true)
	}
	return d
}

// --- denial-rate -------------------------------------------------------------------

func newDenialRate(c DenialRateConfig, g *Config, sink FindingSink, m *Metrics) Detector {
	t := newTracker(DetectorDenialRate, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	share := func(w *window) float64 {
		if w.flows == 0 {
			return 0
		}
		return float64(w.matched) / float64(w.flows)
	}
	t.baselineOf = func(w *window) float64 {
		if w.flows < c.MinFlows {
			return 0
		}
		return share(w)
	}
	t.judge = func(st *keyState, w *window) verdict {
		x := share(w)
		v := verdict{metric: "denied share", observed: x, baseline: st.base, severity: schema.SeverityWarning}
		v.threshold = max(c.MinShare, c.Factor*st.base)
		if !t.warmedUp(st, c.WarmupWindows) {
			// Without history, only an overwhelming share counts.
			v.threshold = max(v.threshold, 0.5)
		}
		v.fire = w.flows >= c.MinFlows && x >= v.threshold
		return v
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%.0f%% of namespace %s's flows were denied (baseline %.0f%%)", 100*v.observed, st.subj.namespace, 100*v.baseline)
	}
	t.where = func(st *keyState) []schema.Cond {
		return []schema.Cond{schema.Eq("src_namespace", st.subj.namespace), schema.Eq("verdict", "DROPPED")}
	}
	d := &detector{tracker: t}
	d.observe = func(f *schema.Flow) {
		if f.IsReply || f.Src.Namespace == "" {
			return
		}
		t.add(t.state(key{a: f.Src.Namespace}, subject{namespace: f.Src.Namespace}, f.Time), f, isDenied(f))
	}
	return d
}
