package analyze

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// window holds what one key saw in one window.
type window struct {
	flows   uint64 // all flows counted for the key
	matched uint64 // flows that match the detector's condition
	bytes   uint64 // bytes of the matched flows
	samples []schema.Flow
	// pairs is lateral-scan's sketch of the window's (address, port) pairs;
	// kept (and cleared) from window to window.
	pairs *pairSketch
}

// verdict is a detector's judgement of one closed window.
type verdict struct {
	fire      bool
	severity  schema.Severity
	metric    string
	observed  float64
	baseline  float64
	threshold float64
}

// subject names what a key is about.
type subject struct {
	namespace, workload, peer string
}

// key identifies what a detector tracks: a workload (namespace, name), a
// namespace pair, or a namespace (second field empty). A struct key avoids
// building a string per flow.
type key struct{ a, b string }

func (k key) String() string { return k.a + "/" + k.b }

// keyState is a key's state: the open window, the baseline, the open finding.
type keyState struct {
	key     key
	subj    subject
	start   time.Time // open window's start
	cur     window
	base    float64 // EWMA of the metric over quiet windows
	windows int     // windows folded into base
	open    *schema.Finding
	quiet   int // windows since the condition last held
	elem    *list.Element
}

// tracker is the machinery every detector shares: per-key tumbling windows
// on event time, a baseline per key, the open/resolve life of findings, and
// a bound on the number of keys (least recently seen evicted).
type tracker struct {
	name         string
	size         time.Duration
	resolveAfter int
	maxKeys      int
	maxSamples   int
	alpha        float64
	sink         FindingSink
	metrics      *Metrics
	// judge evaluates a closed window against the key's baseline.
	judge func(st *keyState, w *window) verdict
	// early lets a count threshold fire while its window is still open, so
	// an alert need not wait for the window to end. The window's close
	// still decides the finding's numbers.
	early bool
	// baselineOf is the metric folded into the baseline for a quiet window.
	baselineOf func(w *window) float64
	// summary and where describe a finding: where holds the conditions
	// that select its flows (the storage package renders them as SQL).
	summary func(st *keyState, v verdict) string
	where   func(st *keyState) []schema.Cond

	states map[key]*keyState
	lru    *list.List // front: most recently seen
	// origin is the time of the first flow the detector saw: a key first
	// seen long after it has a history of silence, not none.
	origin time.Time
}

// warmedUp reports whether the key has warmup windows of history: its own,
// or the detector's when the key appeared after the detector had warmed up.
func (t *tracker) warmedUp(st *keyState, warmup int) bool {
	return st.windows >= warmup || st.start.Sub(t.origin) >= time.Duration(warmup)*t.size
}

func newTracker(name string, size time.Duration, resolveAfter, maxKeys, maxSamples int, sink FindingSink, m *Metrics) *tracker {
	return &tracker{name: name, size: size, resolveAfter: resolveAfter, maxKeys: maxKeys, maxSamples: maxSamples,
		alpha: 0.2, sink: sink, metrics: m, states: map[key]*keyState{}, lru: list.New()}
}

// state returns the key's state with its window rolled forward to t.
func (t *tracker) state(k key, subj subject, at time.Time) *keyState {
	if t.origin.IsZero() || at.Before(t.origin) {
		t.origin = at
	}
	st, ok := t.states[k]
	if !ok {
		st = &keyState{key: k, subj: subj, start: at.Truncate(t.size)}
		st.elem = t.lru.PushFront(st)
		t.states[k] = st
		for len(t.states) > t.maxKeys {
			t.evict(t.lru.Back().Value.(*keyState))
		}
		return st
	}
	t.lru.MoveToFront(st.elem)
	t.roll(st, at)
	return st
}

// add counts a flow in the key's open window.
func (t *tracker) add(st *keyState, f *schema.Flow, matched bool) {
	st.cur.flows++
	if !matched {
		return
	}
	st.cur.matched++
	st.cur.bytes += f.Bytes
	if len(st.cur.samples) < t.maxSamples {
		st.cur.samples = append(st.cur.samples, *f)
	}
	if t.early && st.open == nil {
		if v := t.judge(st, &st.cur); v.fire {
			t.fireEarly(st, v)
		}
	}
}

// fireEarly opens a finding while its window is still open.
func (t *tracker) fireEarly(st *keyState, v verdict) {
	t.openFinding(st, v)
	// Report the open window's numbers without folding them in:
	// close adds them when the window ends.
	f := *st.open
	f.End = st.start.Add(t.size)
	f.Evidence.Flows, f.Evidence.Bytes = st.cur.matched, st.cur.bytes
	f.Evidence.Observed, f.Evidence.Baseline, f.Evidence.Threshold = v.observed, v.baseline, v.threshold
	f.Evidence.Samples = append([]schema.Flow(nil), st.cur.samples...)
	f.Summary = t.summary(st, v)
	f.Flows = &schema.FlowSelector{From: f.Start, To: f.End, Where: t.where(st)}
	t.sink.Finding(f)
}

func (t *tracker) openFinding(st *keyState, v verdict) {
	st.open = &schema.Finding{
		ID: findingID(t.name, st.key.String()), Detector: t.name, Severity: v.severity,
		Namespace: st.subj.namespace, Workload: st.subj.workload, Peer: st.subj.peer,
		Start: st.start, Status: schema.FindingOpen,
		Evidence: schema.Evidence{Window: t.size, Metric: v.metric},
	}
	t.metrics.Findings.WithLabelValues(t.name, string(v.severity)).Inc()
}

// roll closes the key's windows that end at or before at.
func (t *tracker) roll(st *keyState, at time.Time) {
	if at.Before(st.start.Add(t.size)) {
		return
	}
	t.close(st)
	st.start = st.start.Add(t.size)
	// Empty windows in a gap count as quiet ones, up to the point where
	// nothing changes any more; then jump to the window of at.
	for i := 0; i < t.resolveAfter+10 && !at.Before(st.start.Add(t.size)); i++ {
		t.close(st)
		st.start = st.start.Add(t.size)
	}
	if !at.Before(st.start.Add(t.size)) {
		st.start = at.Truncate(t.size)
	}
}

func (t *tracker) close(st *keyState) {
	w := &st.cur
	v := t.judge(st, w)
	end := st.start.Add(t.size)
	switch {
	case v.fire:
		st.quiet = 0
		if st.open == nil {
			t.openFinding(st, v)
		}
		f := st.open
		f.End = end
		f.Evidence.Flows += w.matched
		f.Evidence.Bytes += w.bytes
		if v.observed >= f.Evidence.Observed {
			f.Evidence.Observed, f.Evidence.Baseline, f.Evidence.Threshold = v.observed, v.baseline, v.threshold
		}
		if v.severity.Rank() > f.Severity.Rank() {
			f.Severity = v.severity
		}
		for _, s := range w.samples {
			if len(f.Evidence.Samples) < t.maxSamples {
				f.Evidence.Samples = append(f.Evidence.Samples, s)
			}
		}
		f.Summary = t.summary(st, v)
		f.Flows = &schema.FlowSelector{From: f.Start, To: f.End, Where: t.where(st)}
		t.sink.Finding(*f)
	default:
		if t.baselineOf != nil {
			x := t.baselineOf(w)
			if st.windows == 0 {
				st.base = x
			} else {
				st.base += t.alpha * (x - st.base)
			}
			st.windows++
		}
		if st.open != nil {
			st.quiet++
			if st.quiet >= t.resolveAfter {
				st.open.Status = schema.FindingResolved
				t.sink.Finding(*st.open)
				st.open = nil
			}
		}
	}
	if w.pairs != nil {
		w.pairs.reset()
	}
	*w = window{samples: w.samples[:0], pairs: w.pairs}
}

// advance closes the windows of every key that ended at or before now, and
// forgets keys that have been quiet long enough to carry no state worth keeping.
func (t *tracker) advance(now time.Time) {
	for e := t.lru.Back(); e != nil; {
		prev := e.Prev()
		st := e.Value.(*keyState)
		t.roll(st, now)
		e = prev
	}
}

// flush closes every key's open window and reports open findings as they
// stand (still open: the recording ended, not the incident).
func (t *tracker) flush() {
	for _, st := range t.states {
		t.close(st)
		st.start = st.start.Add(t.size)
	}
}

func (t *tracker) evict(st *keyState) {
	if st.open != nil {
		st.open.Status = schema.FindingResolved
		t.sink.Finding(*st.open)
	}
	t.lru.Remove(st.elem)
	delete(t.states, st.key)
	t.metrics.Evictions.WithLabelValues(t.name).Inc()
}

func (t *tracker) keys() int { return len(t.states) }

// findingID is stable per detector and key: Alertmanager deduplicates on it.
func findingID(detector, k string) string {
	h := sha256.Sum256([]byte(detector + "\x00" + k))
	return hex.EncodeToString(h[:8])
}
