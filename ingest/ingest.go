// Package ingest holds what every flow source shares: the sink that sources
// write normalised flows into, the fan-out to several consumers, and the
// accounting of rejected input.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/flowwarden/flowwarden/schema"
)

// Sink consumes normalised flows. Write may block to slow the source down
// (backpressure); it returns an error only when the flows cannot be accepted.
type Sink interface {
	Write(ctx context.Context, flows ...schema.Flow) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, flows ...schema.Flow) error

// Write calls f.
func (f SinkFunc) Write(ctx context.Context, flows ...schema.Flow) error { return f(ctx, flows...) }

// Fanout writes every flow to each of its sinks in turn; the slowest sink
// sets the pace.
type Fanout []Sink

// Write implements Sink.
func (fo Fanout) Write(ctx context.Context, flows ...schema.Flow) error {
	var errs []error
	for _, s := range fo {
		if err := s.Write(ctx, flows...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stats counts what a source read. It is safe for concurrent use.
type Stats struct {
	mu       sync.Mutex
	read     int64
	accepted int64
	skipped  int64
	rejected map[string]int64
	examples []string
}

// maxExamples bounds the rejected-line examples kept for the summary.
const maxExamples = 20

// Read counts one input record.
func (s *Stats) Read() { s.mu.Lock(); s.read++; s.mu.Unlock() }

// Accept counts a record that became a flow.
func (s *Stats) Accept() { s.AcceptN(1) }

// AcceptN counts n records that became flows.
func (s *Stats) AcceptN(n int) { s.mu.Lock(); s.accepted += int64(n); s.mu.Unlock() }

// Deliver writes flows to sink and, once the sink took them, counts them
// as accepted in stats. Every source hands its flows over through it.
func Deliver(ctx context.Context, sink Sink, stats *Stats, flows ...schema.Flow) error {
	if len(flows) == 0 {
		return nil
	}
	if err := sink.Write(ctx, flows...); err != nil {
		return err
	}
	stats.AcceptN(len(flows))
	return nil
}

// Skip counts a well-formed record that carries no flow (e.g. lost-events notices).
func (s *Stats) Skip() { s.mu.Lock(); s.skipped++; s.mu.Unlock() }

// Reject counts a bad record under a short reason and keeps an example
// ("file:line: detail") for the summary.
func (s *Stats) Reject(reason, example string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejected == nil {
		s.rejected = map[string]int64{}
	}
	s.rejected[reason]++
	if len(s.examples) < maxExamples {
		s.examples = append(s.examples, example)
	}
}

// Snapshot is a copy of Stats at one moment.
type Snapshot struct {
	Read, Accepted, Skipped int64
	Rejected                map[string]int64
	Examples                []string
}

// RejectedTotal sums the rejected counts.
func (s Snapshot) RejectedTotal() int64 {
	var n int64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// Snapshot returns a copy of the counters.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := make(map[string]int64, len(s.rejected))
	for k, v := range s.rejected {
		r[k] = v
	}
	return Snapshot{Read: s.read, Accepted: s.accepted, Skipped: s.skipped, Rejected: r, Examples: append([]string(nil), s.examples...)}
}

// String renders a human summary.
func (s Snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "read %d, accepted %d, skipped %d (not flows), rejected %d", s.Read, s.Accepted, s.Skipped, s.RejectedTotal())
	reasons := make([]string, 0, len(s.Rejected))
	for k := range s.Rejected {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(&b, "\n  rejected %6d  %s", s.Rejected[k], k)
	}
	for _, e := range s.Examples {
		fmt.Fprintf(&b, "\n  e.g. %s", e)
	}
	return b.String()
}
