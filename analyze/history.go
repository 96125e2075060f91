package analyze

import (
	"context"
	"fmt"

	"github.com/flowwarden/flowwarden/schema"
)

// History is recorded traffic to run the detectors over: the flows and the
// nftables counter readings of a time window, each oldest first (the
// storage package reads them from the database).
type History interface {
	EachFlow(ctx context.Context, fn func(*schema.Flow)) error
	EachCounterSample(ctx context.Context, fn func(schema.CounterSample)) error
}

// historyBatch is how many flows DetectHistory hands the engine at once.
const historyBatch = 1024

// DetectHistory runs the engine over h's flows, in event time, then a
// drop-rate detector (drops) over its counter readings, which reports to
// sink; it returns how many flows and readings it read. The engine is not
// flushed: the caller may feed it more before Flush.
func DetectHistory(ctx context.Context, eng *Engine, drops DropRateConfig, sink FindingSink, h History) (flows, counters int, err error) {
	// Checked before anything is read: a bad configuration costs no scan.
	dr, err := NewDropRate(drops, sink, nil)
	if err != nil {
		return 0, 0, err
	}
	buf := make([]schema.Flow, 0, historyBatch)
	var werr error
	write := func() {
		if werr == nil {
			werr = eng.Write(ctx, buf...)
		}
		flows += len(buf)
		buf = buf[:0]
	}
	err = h.EachFlow(ctx, func(f *schema.Flow) {
		if buf = append(buf, *f); len(buf) == historyBatch {
			write()
		}
	})
	if err != nil {
		return 0, 0, err
	}
	if write(); werr != nil {
		return 0, 0, fmt.Errorf("detectors: %w", werr)
	}
	err = h.EachCounterSample(ctx, func(s schema.CounterSample) {
		dr.Observe([]schema.CounterSample{s})
		counters++
	})
	if err != nil {
		return 0, 0, err
	}
	return flows, counters, nil
}
