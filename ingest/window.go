package ingest

import (
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// DefaultMaxSkew is how far ahead of this host's clock a flow's time may be
// before it is rejected: clocks of nodes disagree by seconds, not minutes.
const DefaultMaxSkew = 5 * time.Minute

// Reasons a flow's time is refused at ingest, as counted in
// flowwarden_ingest_rejected_total.
const (
	ReasonFuture = "time in the future"
	ReasonTooOld = "time too old"
)

// TimeWindow bounds the event times a source accepts around the wall clock:
// a flow later than now + MaxSkew, or (when MaxAge is set) earlier than
// now - MaxAge, is rejected and counted, never stored. One flow dated 2100
// (a node with a wrong clock) would otherwise become the newest durable
// flow that a restart resumes after, and no live flow would be stored
// again. The zero value accepts the past and DefaultMaxSkew of future,
// which is what file imports need: old recordings stay importable.
type TimeWindow struct {
	// MaxSkew is how far in the future a flow may be (0: DefaultMaxSkew;
	// negative: no bound).
	MaxSkew time.Duration
	// MaxAge is how far in the past a flow may be (0: no bound). Live
	// sources may set it; a replayed recording keeps its old times.
	MaxAge time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Skew is the effective MaxSkew (negative: no bound).
func (w TimeWindow) Skew() time.Duration {
	if w.MaxSkew == 0 {
		return DefaultMaxSkew
	}
	return w.MaxSkew
}

func (w TimeWindow) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Latest is the latest time accepted now (zero time: no bound).
func (w TimeWindow) Latest() time.Time {
	if w.Skew() < 0 {
		return time.Time{}
	}
	return w.now().Add(w.Skew())
}

// Check refuses a time outside the window with a *schema.FieldError whose
// Reason is ReasonFuture or ReasonTooOld.
func (w TimeWindow) Check(t time.Time) error {
	now := w.now()
	if skew := w.Skew(); skew >= 0 && t.After(now.Add(skew)) {
		return &schema.FieldError{Field: "time", Reason: ReasonFuture, Value: t.UTC().Format(time.RFC3339Nano) + " (more than " + skew.String() + " ahead of this host's clock)"}
	}
	if w.MaxAge > 0 && t.Before(now.Add(-w.MaxAge)) {
		return &schema.FieldError{Field: "time", Reason: ReasonTooOld, Value: t.UTC().Format(time.RFC3339Nano) + " (more than " + w.MaxAge.String() + " ago)"}
	}
	return nil
}
