// Package analyze runs streaming detectors over the flow stream. Windows run
// on flow event time, so replaying a recording gives the findings that the
// live traffic gave; per-key state is bounded (LRU eviction, counted).
package analyze

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowwarden/flowwarden/schema"
)

// FindingSink receives findings as they open, change and resolve. It must
// not block for long: it is called on the flow path.
type FindingSink interface {
	Finding(f schema.Finding)
}

// FindingFunc adapts a function to FindingSink.
type FindingFunc func(schema.Finding)

// Finding calls fn.
func (fn FindingFunc) Finding(f schema.Finding) { fn(f) }

// Detector is one detection rule over the flow stream.
type Detector interface {
	Name() string
	// Observe sees one flow. Flows arrive in roughly increasing time.
	Observe(f *schema.Flow)
	// Advance closes every window that ended at or before now.
	Advance(now time.Time)
	// Flush closes all windows (end of input).
	Flush()
	// Keys is the number of tracked keys.
	Keys() int
}

// Metrics of the engine.
type Metrics struct {
	Flows     prometheus.Counter
	Keys      *prometheus.GaugeVec
	Evictions *prometheus.CounterVec
	Findings  *prometheus.CounterVec
	// DNSVisibleWorkloads counts the workloads whose DNS queries the flows
	// show (Hubble shows them only where a DNS rule sends DNS through
	// Cilium's proxy): dns-tunnel is blind to the others.
	DNSVisibleWorkloads prometheus.Gauge
	// MeshRequests counts inbound requests seen by Envoy sidecars, by
	// destination namespace and whether mutual TLS secured them;
	// MTLSCoverage is the secured share per namespace since start.
	MeshRequests *prometheus.CounterVec
	MTLSCoverage *prometheus.GaugeVec
	// Closed is the event time up to which windows are closed (by the
	// flows, or by Run on the wall clock while a live stream is quiet).
	Closed prometheus.Gauge
}

// NewMetrics creates the engine's metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Flows: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_detector_flows_total",
			Help: "Flows seen by the detector engine."}),
		Keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flowwarden_detector_state_keys",
			Help: "Keys (workloads, namespace pairs) a detector tracks."}, []string{"detector"}),
		Evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_detector_evictions_total",
			Help: "Keys dropped from detector state to stay within the key limit."}, []string{"detector"}),
		Findings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_findings_total",
			Help: "Findings opened, by detector and severity."}, []string{"detector", "severity"}),
		DNSVisibleWorkloads: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_dns_visible_workloads",
			Help: "Workloads whose DNS queries appeared in the flows in the last hour (the ones dns-tunnel can judge)."}),
		MeshRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_mesh_inbound_requests_total",
			Help: "Inbound requests seen in Envoy access logs, by destination namespace and mutual TLS (true/false)."}, []string{"namespace", "mtls"}),
		MTLSCoverage: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flowwarden_mtls_coverage_ratio",
			Help: "Share of a namespace's inbound mesh requests secured by mutual TLS since start (Linkerd's SECURED column)."}, []string{"namespace"}),
		Closed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_detector_windows_closed_until_seconds",
			Help: "Event time (Unix seconds) up to which the detectors' windows are closed: by the flows, or on the wall clock while a live stream is quiet."}),
	}
	if reg != nil {
		reg.MustRegister(m.Flows, m.Keys, m.Evictions, m.Findings, m.DNSVisibleWorkloads, m.MeshRequests, m.MTLSCoverage, m.Closed)
	}
	return m
}

// Engine feeds flows to the detectors and keeps the event-time clock. It is
// an ingest.Sink; Write is safe for concurrent use (calls are serialised).
type Engine struct {
	mu        sync.Mutex
	detectors []Detector
	keyGauges []prometheus.Gauge // per detector, resolved once
	metrics   *Metrics
	clock     time.Time // newest flow time seen
	advanced  time.Time // last time windows were advanced to
	// Lateness is how far behind the newest flow a flow may arrive and still
	// count in its window.
	lateness time.Duration
	tick     time.Duration

	// The engine's own wall clock (Run): whatever the sources, a stream
	// whose newest flow was recent when it arrived is live, and its windows
	// keep closing on the wall clock while it is quiet.
	now      func() time.Time
	lag      time.Duration // wall time minus event time of the newest flow, when it arrived
	wallTick time.Duration // how often Run looks at the wall clock
	wallLag  time.Duration // how far behind the wall clock Run closes windows
	liveLag  time.Duration // a newest flow at most this old on arrival makes the stream live
}

// NewEngine returns an engine over the given detectors.
func NewEngine(cfg Config, sink FindingSink, metrics *Metrics) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	e := &Engine{metrics: metrics, lateness: cfg.Lateness, tick: 10 * time.Second,
		now: time.Now, wallTick: 5 * time.Second, wallLag: 5 * time.Second, liveLag: 5 * time.Minute}
	e.detectors = cfg.detectors(sink, metrics)
	for _, d := range e.detectors {
		e.keyGauges = append(e.keyGauges, metrics.Keys.WithLabelValues(d.Name()))
	}
	return e, nil
}

// Write implements ingest.Sink.
func (e *Engine) Write(_ context.Context, flows ...schema.Flow) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	newest := false
	for i := range flows {
		f := &flows[i]
		for _, d := range e.detectors {
			d.Observe(f)
		}
		if f.Time.After(e.clock) {
			e.clock, newest = f.Time, true
			if e.clock.Sub(e.advanced) >= e.tick {
				e.advanceLocked(e.clock.Add(-e.lateness))
			}
		}
	}
	if newest {
		e.lag = e.now().Sub(e.clock)
	}
	e.metrics.Flows.Add(float64(len(flows)))
	return nil
}

// Run closes windows on the wall clock until ctx ends, whatever feeds the
// engine (Hubble, Envoy access logs, conntrack): every few seconds, while
// the stream is live (its newest flow was at most 5 minutes old when it
// arrived), windows that ended more than a few seconds ago are closed, so
// findings resolve while traffic is quiet, however long it stays quiet. A
// replay of old flows is not live: its windows close on its own flows only.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.wallTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.advanceOnWallClock()
		}
	}
}

// advanceOnWallClock is one tick of Run.
func (e *Engine) advanceOnWallClock() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.clock.IsZero() && e.lag < e.liveLag {
		e.advanceToLocked(e.now().Add(-e.wallLag))
	}
}

func (e *Engine) advanceLocked(now time.Time) {
	e.advanced = e.clock
	e.metrics.Closed.Set(float64(now.UnixNano()) / 1e9)
	for i, d := range e.detectors {
		d.Advance(now)
		e.keyGauges[i].Set(float64(d.Keys()))
	}
}

// AdvanceTo closes windows up to now (for a live stream gone quiet: the
// caller passes wall time minus its expected delay).
func (e *Engine) AdvanceTo(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.advanceToLocked(now)
}

// advanceToLocked moves the clock to now (never back) and closes windows.
func (e *Engine) advanceToLocked(now time.Time) {
	if now.After(e.clock) {
		e.clock = now
	}
	e.advanceLocked(e.clock.Add(-e.lateness))
}

// Flush closes all windows: the end of a recording.
func (e *Engine) Flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.detectors {
		d.Flush()
	}
}

// Detectors lists the detectors' names.
func (e *Engine) Detectors() []string {
	var out []string
	for _, d := range e.detectors {
		out = append(out, d.Name())
	}
	return out
}

// Keys sums the tracked keys of all detectors.
func (e *Engine) Keys() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, d := range e.detectors {
		n += d.Keys()
	}
	return n
}

// Fanout passes every finding to each of its sinks.
type Fanout []FindingSink

// Finding implements FindingSink.
func (fo Fanout) Finding(f schema.Finding) {
	for _, s := range fo {
		s.Finding(f)
	}
}
