package clickhouse

import (
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Batching by day (WriterConfig.DayBatches). The flows table is partitioned
// by toDate(time), and ClickHouse writes one part per partition an insert
// touches: a batch spanning five days costs five parts (each with its
// column files and write buffers) and five runs of the rollups' part
// writing. Imports of recorded flows often span days, so their rows are
// batched per day: each insert then writes one part.
//
// Each open day is a lane of Writer.days, filled under its own lock, so
// writers on several goroutines fill different days in parallel. A lane
// leaves the map (gone) when its batch is taken for any reason other than
// being full; a writer that finds its lane gone looks the day up again.
// Lock order: dayMu, then a lane's mu.

const secondsPerDay = 24 * 60 * 60

// dayOf is t's day in Unix days, UTC (toDate(time) of a DateTime64(9, 'UTC')).
func dayOf(t time.Time) int64 {
	s := t.Unix()
	d := s / secondsPerDay
	if s%secondsPerDay < 0 {
		d--
	}
	return d
}

// writeDays is Write for a writer batching by day.
func (w *Writer) writeDays(flows []schema.Flow) error {
	maxRows := int64(w.cfg.Lanes) * int64(w.cfg.BatchSize)
	for len(flows) > 0 {
		// A run of flows of one day takes the lane's lock once.
		day := dayOf(flows[0].Time)
		n := 1
		for n < len(flows) && dayOf(flows[n].Time) == day {
			n++
		}
		run := flows[:n]
		flows = flows[n:]
		for len(run) > 0 {
			l := w.dayLane(day)
			l.mu.Lock()
			if w.stopped.Load() {
				l.mu.Unlock()
				return ErrWriterClosed
			}
			if l.gone {
				l.mu.Unlock()
				continue
			}
			if l.cur.len() == 0 {
				l.started = time.Now()
			}
			k := min(len(run), w.cfg.BatchSize-l.cur.len())
			for i := range k {
				l.cur.add(&run[i])
			}
			run = run[k:]
			held := w.dayRows.Add(int64(k))
			var full []pending
			if l.cur.len() >= w.cfg.BatchSize {
				full = append(full, w.takeDayLocked(l, nil))
			}
			l.mu.Unlock()
			if full == nil && held > maxRows {
				// The open days hold as many rows as the lanes would:
				// the fullest is inserted.
				w.dayMu.Lock()
				full = w.evictLocked()
				w.dayMu.Unlock()
			}
			for _, p := range full {
				w.send(p)
			}
		}
	}
	return nil
}

// dayLane returns the open lane of day, opening it (and, at DayBatches
// open days, inserting the fullest) as needed.
func (w *Writer) dayLane(day int64) *lane {
	w.dayMu.Lock()
	l := w.days[day]
	var evicted []pending
	if l == nil {
		if len(w.days) >= w.cfg.DayBatches {
			w.dropEmptyLocked()
		}
		if len(w.days) >= w.cfg.DayBatches {
			evicted = w.evictLocked()
		}
		l = &lane{cur: w.newColumns(), day: day}
		w.days[day] = l
	}
	w.dayMu.Unlock()
	for _, p := range evicted {
		w.send(p)
	}
	return l
}

// dropEmptyLocked closes the open days that hold no rows; dayMu is held.
func (w *Writer) dropEmptyLocked() {
	for d, l := range w.days {
		l.mu.Lock()
		if l.cur.len() == 0 {
			l.gone = true
			delete(w.days, d)
		}
		l.mu.Unlock()
	}
}

// evictLocked takes the batch of the fullest open day and closes that day;
// dayMu is held; the caller sends what it returns.
func (w *Writer) evictLocked() []pending {
	var victim *lane
	most := -1
	for _, l := range w.days {
		l.mu.Lock()
		if n := l.cur.len(); n > most {
			victim, most = l, n
		}
		l.mu.Unlock()
	}
	if victim == nil {
		return nil
	}
	victim.mu.Lock()
	defer victim.mu.Unlock()
	if w.stopped.Load() { // Run takes every open day
		return nil
	}
	var out []pending
	if victim.cur.len() > 0 {
		out = append(out, w.takeClosingLocked(victim))
	}
	victim.gone = true
	delete(w.days, victim.day)
	return out
}

// takeDayLocked is takeLocked for a day's lane.
func (w *Writer) takeDayLocked(l *lane, done chan error) pending {
	w.dayRows.Add(-int64(l.cur.len()))
	return w.takeLocked(l, done)
}

// takeClosingLocked takes a day's batch as the day closes (the caller
// marks the lane gone): no new batch is taken from the free list for it.
func (w *Writer) takeClosingLocked(l *lane) pending {
	w.dayRows.Add(-int64(l.cur.len()))
	p := pending{cols: l.cur, seq: w.seq.Add(1)}
	l.cur = w.closedCols
	w.sending.Add(1)
	return p
}

// allDays is the open days' lanes.
func (w *Writer) allDays() []*lane {
	w.dayMu.Lock()
	defer w.dayMu.Unlock()
	out := make([]*lane, 0, len(w.days))
	for _, l := range w.days {
		out = append(out, l)
	}
	return out
}

// expireDays inserts the batches of days whose first row is FlushInterval
// old and closes the empty days.
func (w *Writer) expireDays() {
	if w.days == nil {
		return
	}
	var out []pending
	w.dayMu.Lock()
	for d, l := range w.days {
		l.mu.Lock()
		if !w.stopped.Load() && (l.cur.len() == 0 || time.Since(l.started) >= w.cfg.FlushInterval) {
			if l.cur.len() > 0 {
				out = append(out, w.takeClosingLocked(l))
			}
			l.gone = true
			delete(w.days, d)
		}
		l.mu.Unlock()
	}
	w.dayMu.Unlock()
	for _, p := range out {
		w.send(p)
	}
}

// flushDays hands over every open day's batch and closes the days, then a
// last, empty item whose done channel Flush waits on (its number is the
// highest of them).
func (w *Writer) flushDays() (pending, error) {
	var out []pending
	w.dayMu.Lock()
	if w.stopped.Load() {
		w.dayMu.Unlock()
		return pending{}, ErrWriterClosed
	}
	for d, l := range w.days {
		l.mu.Lock()
		if l.cur.len() > 0 {
			out = append(out, w.takeClosingLocked(l))
		}
		l.gone = true
		delete(w.days, d)
		l.mu.Unlock()
	}
	// Under dayMu, which Run takes after it stops the batching: the
	// queue is still open for this item.
	last := pending{cols: w.newColumns(), seq: w.seq.Add(1), done: make(chan error, 1)}
	w.sending.Add(1)
	w.dayMu.Unlock()
	for _, p := range out {
		w.send(p)
	}
	w.send(last)
	return last, nil
}
