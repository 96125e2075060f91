package analyze

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowwarden/flowwarden/schema"
)

// DetectorPlaintextInMesh names the plaintext-in-mesh detector.
const DetectorPlaintextInMesh = "plaintext-in-mesh"

// PlaintextInMeshConfig: inbound requests without mutual TLS (Envoy/Istio
// access logs) to workloads that should require it.
type PlaintextInMeshConfig struct {
	Enabled      bool          `json:"enabled"`
	Window       time.Duration `json:"window"`
	ResolveAfter int           `json:"resolveAfter"`
	// MinRequests plaintext requests in a window fire.
	MinRequests uint64 `json:"minRequests"`
	// StrictNamespaces should be strict whatever the policies in force say.
	StrictNamespaces []string `json:"strictNamespaces"`
	// PeerAuthentications in force (read from a directory or the cluster).
	PeerAuthentications []PeerAuthentication `json:"-"`
	// RootNamespace holds Istio's mesh-wide policy.
	RootNamespace string `json:"rootNamespace"`
	// ExemptPorts never need mutual TLS: Istio's own health, status and
	// telemetry ports, which kubelet and Prometheus reach in plaintext.
	ExemptPorts []uint16 `json:"exemptPorts"`
}

func defaultPlaintextInMesh() PlaintextInMeshConfig {
	return PlaintextInMeshConfig{Enabled: true, Window: 5 * time.Minute, ResolveAfter: 2, MinRequests: 1,
		RootNamespace: "istio-system", ExemptPorts: []uint16{15020, 15021, 15090}}
}

func (c *PlaintextInMeshConfig) validate() error {
	if c.MinRequests < 1 {
		return errors.New("plaintextInMesh.minRequests must be positive")
	}
	return nil
}

// NamespaceCoverage is the share of a namespace's inbound mesh requests
// that mutual TLS secured (Linkerd's SECURED column).
type NamespaceCoverage = schema.NamespaceCoverage

// MTLSCoverage counts inbound mesh requests per namespace. The zero value
// is ready; it is not safe for concurrent use.
type MTLSCoverage struct {
	ns map[string]*[2]uint64 // secured, total
}

// Observe counts a flow if it is an inbound request an Envoy sidecar logged.
func (c *MTLSCoverage) Observe(f *schema.Flow) { c.observeN(f, 1) }

// inboundMeshRequest reports whether a flow is an inbound request an Envoy
// sidecar logged: what the coverage counts.
func inboundMeshRequest(f *schema.Flow) bool {
	return f.Source == schema.SourceEnvoy && f.Direction == schema.DirectionIngress && f.Dst.Namespace != ""
}

func (c *MTLSCoverage) observeN(f *schema.Flow, k uint64) {
	if !inboundMeshRequest(f) {
		return
	}
	if c.ns == nil {
		c.ns = map[string]*[2]uint64{}
	}
	n := c.ns[f.Dst.Namespace]
	if n == nil {
		n = &[2]uint64{}
		c.ns[f.Dst.Namespace] = n
	}
	if f.MTLS {
		n[0] += k
	}
	n[1] += k
}

// Namespaces returns the coverage of every namespace seen, by name.
func (c *MTLSCoverage) Namespaces() []NamespaceCoverage {
	out := make([]NamespaceCoverage, 0, len(c.ns))
	for ns, n := range c.ns {
		out = append(out, NamespaceCoverage{Namespace: ns, Secured: n[0], Total: n[1], Ratio: float64(n[0]) / float64(n[1])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out
}

// MTLSCoverageOf computes the coverage of a set of flows (stored history,
// for a report).
func MTLSCoverageOf(flows []schema.Flow) []NamespaceCoverage {
	var c MTLSCoverage
	for i := range flows {
		c.Observe(&flows[i])
	}
	return c.Namespaces()
}

type plaintextInMesh struct {
	*detector
	cfg      PlaintextInMeshConfig
	policy   *MTLSPolicy
	exempt   map[uint16]bool
	coverage MTLSCoverage
	exported map[string]*nsMetrics
	metrics  *Metrics
}

func newPlaintextInMesh(c PlaintextInMeshConfig, g *Config, sink FindingSink, m *Metrics) *plaintextInMesh {
	p := &plaintextInMesh{cfg: c, policy: NewMTLSPolicy(c.PeerAuthentications, c.RootNamespace, c.StrictNamespaces),
		exempt: map[uint16]bool{}, exported: map[string]*nsMetrics{}, metrics: m}
	for _, port := range c.ExemptPorts {
		p.exempt[port] = true
	}
	t := newTracker(DetectorPlaintextInMesh, c.Window, c.ResolveAfter, g.MaxKeys, g.Samples, sink, m)
	t.early = true
	t.judge = func(_ *keyState, w *window) verdict {
		return verdict{fire: w.matched >= c.MinRequests, severity: schema.SeverityWarning, metric: "plaintext requests",
			observed: float64(w.matched), threshold: float64(c.MinRequests)}
	}
	t.summary = func(st *keyState, v verdict) string {
		return fmt.Sprintf("%s/%s took %.0f inbound requests without mutual TLS in %s, where mutual TLS should be strict",
			st.subj.namespace, st.subj.workload, v.observed, c.Window)
	}
	t.where = func(st *keyState) []schema.Cond {
		return []schema.Cond{schema.Eq("source", "envoy"), schema.Eq("direction", "INGRESS"), schema.IsFalse("mtls"),
			schema.Eq("dst_namespace", st.subj.namespace), schema.Eq("dst_workload", st.subj.workload)}
	}
	p.detector = &detector{tracker: t}
	p.observe = func(f *schema.Flow) {
		p.coverage.Observe(f)
		if p.policy.Empty() || f.Source != schema.SourceEnvoy || f.Direction != schema.DirectionIngress || f.Dst.Namespace == "" || p.exempt[f.DstPort] {
			return
		}
		// kubelet's probes come from the node.
		if f.Src.WorkloadKind == schema.KindReserved && f.Src.Workload != schema.ReservedWorld {
			return
		}
		if !p.policy.Strict(f.Dst.Namespace, f.Dst.Labels, f.DstPort) {
			return
		}
		k := key{f.Dst.Namespace, f.Dst.Workload}
		t.add(t.state(k, subject{namespace: f.Dst.Namespace, workload: f.Dst.Workload}, f.Time), f, !f.MTLS)
	}
	return p
}

func (p *plaintextInMesh) Advance(now time.Time) {
	p.detector.Advance(now)
	for ns, n := range p.coverage.ns {
		x := p.exported[ns]
		if x == nil {
			x = &nsMetrics{secured: p.metrics.MeshRequests.WithLabelValues(ns, "true"), plain: p.metrics.MeshRequests.WithLabelValues(ns, "false"),
				ratio: p.metrics.MTLSCoverage.WithLabelValues(ns)}
			p.exported[ns] = x
		}
		if x.was == *n {
			continue
		}
		x.secured.Add(float64(n[0] - x.was[0]))
		x.plain.Add(float64((n[1] - n[0]) - (x.was[1] - x.was[0])))
		x.ratio.Set(float64(n[0]) / float64(n[1]))
		x.was = *n
	}
}

// nsMetrics are a namespace's coverage metrics and the counts they show.
type nsMetrics struct {
	secured, plain prometheus.Counter
	ratio          prometheus.Gauge
	was            [2]uint64
}

// MTLSCoverage returns the mutual TLS coverage per namespace of the
// inbound mesh requests the engine has seen (nil when plaintext-in-mesh is
// off): for the page and the report.
func (e *Engine) MTLSCoverage() []NamespaceCoverage {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.detectors {
		if p, ok := d.(*plaintextInMesh); ok {
			return p.coverage.Namespaces()
		}
	}
	return nil
}

// SetPeerAuthentications replaces the PeerAuthentications in force that
// plaintext-in-mesh judges by (serve lists them again every
// --current-refresh); the namespaces named strict stay strict.
func (e *Engine) SetPeerAuthentications(pas []PeerAuthentication) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.detectors {
		if p, ok := d.(*plaintextInMesh); ok {
			p.policy = NewMTLSPolicy(pas, p.cfg.RootNamespace, p.cfg.StrictNamespaces)
		}
	}
}
