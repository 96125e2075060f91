package analyze

import (
	"container/list"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// DetectorBeacon names the beacon detector.
const DetectorBeacon = "beacon"

// BeaconConfig: periodic connections from a workload to one outside
// address, scored on the regularity of their intervals as RITA scores
// beacons (Bowley skew, median absolute deviation, count), and on novelty.
type BeaconConfig struct {
	Enabled bool `json:"enabled"`
	// MinConnections is how many connections a destination needs before it is judged.
	MinConnections int `json:"minConnections"`
	// MinInterval and MaxInterval bound the median interval of a beacon:
	// faster is a transfer (egress-spike's), slower takes too long to judge.
	MinInterval time.Duration `json:"minInterval"`
	MaxInterval time.Duration `json:"maxInterval"`
	// MinScore in [0, 1] fires.
	MinScore float64 `json:"minScore"`
	// Baseline is how long after the detector's first flow destinations are
	// still learned as established: periodic calls present since then
	// (licence checks, syncs, vendor health pings) stay quiet.
	Baseline time.Duration `json:"baseline"`
	// ResolveAfter median intervals without a connection resolve a finding.
	ResolveAfter int `json:"resolveAfter"`
}

func defaultBeacon() BeaconConfig {
	return BeaconConfig{Enabled: true, MinConnections: 12, MinInterval: 10 * time.Second, MaxInterval: 2 * time.Hour,
		MinScore: 0.8, Baseline: 10 * time.Minute, ResolveAfter: 5}
}

func (c *BeaconConfig) validate() error {
	if c.MinConnections < 4 || c.MinConnections > beaconRing || c.MinScore <= 0 || c.MinScore > 1 || c.MinInterval <= 0 || c.MaxInterval <= c.MinInterval {
		return fmt.Errorf("beacon: need 4 <= minConnections <= %d, 0 < minScore <= 1, 0 < minInterval < maxInterval", beaconRing)
	}
	if c.ResolveAfter < 1 {
		return errors.New("beacon.resolveAfter must be positive")
	}
	return nil
}

const beaconRing = 32

type beaconKey struct {
	ns, workload string
	dst          netip.Addr
}

type beaconState struct {
	k       beaconKey
	first   time.Time // first connection seen
	times   [beaconRing]int64
	n       int // connections seen (the ring holds the last beaconRing)
	named   string
	open    *schema.Finding
	median  time.Duration
	sentEnd time.Time // End when last reported
	samples []schema.Flow
	elem    *list.Element
}

type beacon struct {
	cfg     BeaconConfig
	maxKeys int
	samples int
	sink    FindingSink
	metrics *Metrics
	states  map[beaconKey]*beaconState
	lru     *list.List
	open    map[*beaconState]struct{}
	origin  time.Time
}

func newBeacon(c BeaconConfig, g *Config, sink FindingSink, m *Metrics) *beacon {
	return &beacon{cfg: c, maxKeys: g.MaxKeys, samples: g.Samples, sink: sink, metrics: m,
		states: map[beaconKey]*beaconState{}, lru: list.New(), open: map[*beaconState]struct{}{}}
}

func (b *beacon) Name() string { return DetectorBeacon }
func (b *beacon) Keys() int    { return len(b.states) }

func (b *beacon) Observe(f *schema.Flow) {
	if b.origin.IsZero() || f.Time.Before(b.origin) {
		b.origin = f.Time
	}
	// A connection's first packet (Hubble), or a record per connection
	// (Envoy, conntrack, and UDP), from a pod to the world.
	if f.IsReply || (f.TCPFlags != "SYN" && f.TCPFlags != "") || !f.Dst.IsWorld() || !isPodSource(f) || !f.DstIP.IsValid() {
		return
	}
	k := beaconKey{f.Src.Namespace, f.Src.Workload, f.DstIP}
	st, ok := b.states[k]
	if !ok {
		st = &beaconState{k: k, first: f.Time}
		st.elem = b.lru.PushFront(st)
		b.states[k] = st
		for len(b.states) > b.maxKeys {
			b.evict(b.lru.Back().Value.(*beaconState))
		}
	} else {
		b.lru.MoveToFront(st.elem)
	}
	if st.named == "" && len(f.DstNames) > 0 {
		st.named = f.DstNames[0]
	}
	at := f.Time.UnixNano()
	if st.n > 0 {
		if last := st.times[(st.n-1)%beaconRing]; at-last < int64(time.Second) {
			return // the same connection attempt, or retries: one event
		}
	}
	st.times[st.n%beaconRing] = at
	st.n++
	if st.open != nil {
		st.open.End = f.Time.Truncate(time.Second).Add(time.Second)
		st.open.Evidence.Flows++
		if len(st.samples) < b.samples {
			st.samples = append(st.samples, *f)
		}
		return
	}
	if st.n < b.cfg.MinConnections+1 || st.first.Sub(b.origin) < b.cfg.Baseline {
		return // too few, or established since the baseline
	}
	score, median := b.score(st)
	if score < b.cfg.MinScore || median < b.cfg.MinInterval || median > b.cfg.MaxInterval {
		return
	}
	b.fire(st, f, score, median)
}

// beaconMinMADScore gates the score: intervals whose median absolute
// deviation exceeds a fifth of their median are not a beacon. Random
// (Poisson) calls have a MAD of about half their median.
const beaconMinMADScore = 0.8

// score rates the regularity of the last connections' intervals in [0, 1],
// as RITA does: 1-MAD/median (dispersion, weighted twice, and gated), 1-|Bowley
// skew| (symmetry) and the count against MinConnections.
func (b *beacon) score(st *beaconState) (float64, time.Duration) {
	n := min(st.n, beaconRing)
	var ts [beaconRing]int64
	for i := 0; i < n; i++ {
		ts[i] = st.times[(st.n-n+i)%beaconRing]
	}
	var iv [beaconRing - 1]float64
	for i := 1; i < n; i++ {
		iv[i-1] = float64(ts[i] - ts[i-1])
	}
	d := iv[:n-1]
	slices.Sort(d)
	q1, q2, q3 := quantile(d, 0.25), quantile(d, 0.5), quantile(d, 0.75)
	skew := 0.0
	if q3 > q1 && q2 != q1 && q2 != q3 {
		skew = (q3 + q1 - 2*q2) / (q3 - q1)
	}
	var dev [beaconRing - 1]float64
	for i, x := range d {
		dev[i] = abs(x - q2)
	}
	dd := dev[:len(d)]
	slices.Sort(dd)
	mad := quantile(dd, 0.5)
	madScore := 0.0
	if q2 > 0 {
		madScore = max(0, 1-mad/q2)
	}
	countScore := min(1, float64(len(d))/float64(b.cfg.MinConnections))
	if madScore < beaconMinMADScore {
		return 0, time.Duration(q2) // dispersed: not a beacon whatever the rest says
	}
	return (2*madScore + 1 - abs(skew) + countScore) / 4, time.Duration(q2)
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func (b *beacon) fire(st *beaconState, f *schema.Flow, score float64, median time.Duration) {
	sev := schema.SeverityWarning
	if st.named == "" {
		sev = schema.SeverityCritical // never seen before and reached by address, not by a name
	}
	n := min(st.n, beaconRing)
	start := time.Unix(0, st.times[(st.n-n)%beaconRing]).UTC()
	peer := st.k.dst.String()
	st.median = median
	st.samples = append(st.samples[:0], *f)
	st.open = &schema.Finding{
		ID: findingID(DetectorBeacon, st.k.ns+"/"+st.k.workload+"/"+peer), Detector: DetectorBeacon, Severity: sev,
		Namespace: st.k.ns, Workload: st.k.workload, Peer: peer,
		Start: start.Truncate(time.Second), End: f.Time.Truncate(time.Second).Add(time.Second), Status: schema.FindingOpen,
		Evidence: schema.Evidence{Window: median, Metric: "beacon score", Observed: score, Threshold: b.cfg.MinScore, Flows: uint64(n)},
	}
	name := "no DNS name"
	if st.named != "" {
		name = "name " + st.named
	}
	st.open.Summary = fmt.Sprintf("%s/%s connects to %s (%s, first seen %s) every %s with beacon score %.2f over %d connections",
		st.k.ns, st.k.workload, peer, name, st.first.UTC().Format(time.RFC3339), median.Round(time.Second), score, n)
	st.open.Flows = &schema.FlowSelector{From: st.open.Start, To: st.open.End.Add(24 * time.Hour), Where: []schema.Cond{
		schema.Eq("src_namespace", st.k.ns), schema.Eq("src_workload", st.k.workload),
		{Field: "dst_ip", Op: schema.OpAddrIn, Values: []string{peer}}, schema.IsFalse("is_reply")}}
	b.open[st] = struct{}{}
	b.metrics.Findings.WithLabelValues(DetectorBeacon, string(sev)).Inc()
	b.sink.Finding(*st.open)
}

func (b *beacon) report(st *beaconState) {
	st.sentEnd = st.open.End
	f := *st.open
	f.Evidence.Samples = append([]schema.Flow(nil), st.samples...)
	b.sink.Finding(f)
}

func (b *beacon) Advance(now time.Time) {
	for st := range b.open {
		last := time.Unix(0, st.times[(st.n-1)%beaconRing])
		if now.Sub(last) > time.Duration(b.cfg.ResolveAfter)*st.median {
			b.resolve(st)
		} else if !st.open.End.Equal(st.sentEnd) {
			b.report(st)
		}
	}
}

func (b *beacon) resolve(st *beaconState) {
	st.open.Status = schema.FindingResolved
	b.report(st)
	st.open, st.samples = nil, nil
	delete(b.open, st)
}

func (b *beacon) Flush() {
	for st := range b.open {
		b.report(st)
	}
}

func (b *beacon) evict(st *beaconState) {
	if st.open != nil {
		b.resolve(st)
	}
	b.lru.Remove(st.elem)
	delete(b.states, st.k)
	b.metrics.Evictions.WithLabelValues(DetectorBeacon).Inc()
}
