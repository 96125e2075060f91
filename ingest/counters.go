package ingest

import (
	"context"
	"errors"

	"github.com/flowwarden/flowwarden/schema"
)

// CounterSink consumes counter samples (nftables counters): the storage
// layer keeps them, the drop-rate detector watches them. Like Sink, it
// returns an error only when the samples cannot be accepted.
type CounterSink interface {
	WriteCounters(ctx context.Context, samples []schema.CounterSample) error
}

// CounterSinkFunc adapts a function to CounterSink.
type CounterSinkFunc func(ctx context.Context, samples []schema.CounterSample) error

// WriteCounters calls f.
func (f CounterSinkFunc) WriteCounters(ctx context.Context, samples []schema.CounterSample) error {
	return f(ctx, samples)
}

// CounterFanout hands every sample to each of its sinks in turn, as Fanout
// does with flows; a sink that fails does not keep the others from them.
type CounterFanout []CounterSink

// WriteCounters implements CounterSink.
func (fo CounterFanout) WriteCounters(ctx context.Context, samples []schema.CounterSample) error {
	var errs []error
	for _, s := range fo {
		if err := s.WriteCounters(ctx, samples); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
