package analyze

import (
	"context"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Recordings runs the detectors over recordings read one after the other
// (files). An engine's windows only move forward, so a recording that
// starts before the ones already read ended (recordings of the same
// hour, such as the incident scenarios) gets an engine of its own, with
// fresh windows and baselines, instead of having its flows counted in
// the previous recording's last window; a recording that follows on (a
// rotated file) goes on in the same engine. It implements ingest.Sink;
// not safe for concurrent use.
type Recordings struct {
	cfg  Config
	sink FindingSink
	eng  *Engine
	// next is set by NextRecording until the next flow decides.
	next  bool
	clock time.Time
	// Runs counts the engines used.
	Runs int
}

// NewRecordings checks cfg; the findings go to sink.
func NewRecordings(cfg Config, sink FindingSink) (*Recordings, error) {
	eng, err := NewEngine(cfg, sink, nil)
	if err != nil {
		return nil, err
	}
	return &Recordings{cfg: cfg, sink: sink, eng: eng, Runs: 1}, nil
}

// NextRecording says the flows written next start another recording.
func (r *Recordings) NextRecording() { r.next = true }

// Write implements ingest.Sink.
func (r *Recordings) Write(ctx context.Context, flows ...schema.Flow) error {
	if r.next && len(flows) > 0 {
		r.next = false
		if !r.clock.IsZero() && flows[0].Time.Before(r.clock.Add(-r.cfg.Lateness)) {
			r.eng.Flush()
			eng, err := NewEngine(r.cfg, r.sink, nil)
			if err != nil {
				return err
			}
			r.eng, r.clock = eng, time.Time{}
			r.Runs++
		}
	}
	for i := range flows {
		if flows[i].Time.After(r.clock) {
			r.clock = flows[i].Time
		}
	}
	return r.eng.Write(ctx, flows...)
}

// Flush closes the windows of the last recording.
func (r *Recordings) Flush() { r.eng.Flush() }
