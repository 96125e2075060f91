package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	chgo "github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowwarden/flowwarden/schema"
)

// WriterConfig configures the batch writer.
type WriterConfig struct {
	// BatchSize is the number of rows that triggers a flush (default 50,000).
	BatchSize int
	// FlushInterval flushes a partial batch this long after its first row (default 2 s).
	FlushInterval time.Duration
	// QueueBatches is how many full batches may wait for insertion before
	// Write blocks its caller (backpressure; default 4).
	QueueBatches int
	// MaxBackoff caps the pause between insert retries (default 10 s).
	MaxBackoff time.Duration
	// ShutdownTimeout bounds the final flush when the writer stops (default 30 s).
	ShutdownTimeout time.Duration
	// Inserters is how many inserts may run at once (default 2).
	Inserters int
	// SpoolDir, when set, makes every accepted flow durable before it is
	// inserted: flows are appended to segment files there and inserted
	// segment by segment, oldest first, each with a deduplication token
	// derived from its name. An outage or a crash loses nothing accepted;
	// the spool is replayed when ClickHouse answers again.
	SpoolDir string
	// SpoolMaxBytes caps the spool; at the cap Write blocks (default 1 GiB).
	SpoolMaxBytes int64
	// SpoolFsync syncs every append to disk (default true via DefaultWriterConfig).
	SpoolFsync bool
	// Table is the table flows are inserted into (default "flows").
	Table string
	// Lanes is how many batches are filled at once (default 1). With
	// more, writers on several goroutines fill them in parallel, and the
	// last batches of an import are inserted side by side, each holding
	// a share of the rows.
	Lanes int
	// Preallocate reserves BatchSize rows in every new batch at once,
	// for writers that fill every batch (file imports), so its columns
	// are not copied as they grow. Off for serve, whose batches are often
	// small.
	Preallocate bool
	// DayBatches, when positive (file imports; ignored with SpoolDir),
	// batches rows by their UTC day, the flows table's partition
	// (toDate(time)), instead of by lane: every insert then writes one
	// partition, one part, not one part per day the batch spans. At most
	// DayBatches days are open at once, and they hold at most
	// Lanes*BatchSize rows together (the memory of the lanes they
	// replace): beyond either, the fullest open day is inserted. A day's
	// batch is also inserted when it reaches BatchSize rows, FlushInterval
	// after its first row, at Flush and when the writer stops.
	DayBatches int
}

// DefaultWriterConfig returns the defaults.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{Inserters: 2, SpoolMaxBytes: 1 << 30, SpoolFsync: true, BatchSize: 50000, FlushInterval: 2 * time.Second, QueueBatches: 4, MaxBackoff: 10 * time.Second, ShutdownTimeout: 30 * time.Second, Table: "flows"}
}

// ImportBatchSize is the batch size of file imports (flowwarden ingest).
const ImportBatchSize = 200_000

// ImportDayBatches is how many days' batches a file import keeps open
// (WriterConfig.DayBatches).
const ImportDayBatches = 8

// ImportWriterConfig is the configuration for file imports, which read as
// fast as ClickHouse takes the rows and have no spool: ImportBatchSize-row
// batches (the server's insert cost per row falls as batches grow: fewer
// inserts, fewer and bigger parts, one run of the rollup views per batch),
// preallocated; one lane per inserter, so the decoding goroutines fill
// batches in parallel and the import's last batches are inserted side by
// side rather than one after the other; one full batch waiting at most, so
// an import holds at most five batches (roughly 250 bytes per row each);
// partial batches wait 10 s, not 2 s, before they are inserted (a slow
// read, or a busy machine, then does not cut them short); rows batched by
// day (DayBatches), so that each insert writes one partition.
func ImportWriterConfig() WriterConfig {
	c := DefaultWriterConfig()
	c.BatchSize = ImportBatchSize
	c.FlushInterval = 10 * time.Second
	c.QueueBatches = 1
	c.Lanes = c.Inserters
	c.Preallocate = true
	c.DayBatches = ImportDayBatches
	return c
}

func (c *WriterConfig) validate() error {
	d := DefaultWriterConfig()
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.QueueBatches == 0 {
		c.QueueBatches = d.QueueBatches
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = d.SpoolMaxBytes
	}
	if c.Inserters == 0 {
		c.Inserters = d.Inserters
	}
	if c.Lanes == 0 {
		c.Lanes = 1
	}
	if c.Table == "" {
		c.Table = d.Table
	}
	if c.SpoolDir != "" {
		c.DayBatches = 0
	}
	if c.BatchSize < 1 || c.FlushInterval < 0 || c.QueueBatches < 1 || c.Lanes < 1 || c.DayBatches < 0 {
		return fmt.Errorf("writer: batch size %d, flush interval %s, queue %d and lanes %d must be positive", c.BatchSize, c.FlushInterval, c.QueueBatches, c.Lanes)
	}
	return nil
}

// WriterMetrics are the writer's Prometheus metrics.
type WriterMetrics struct {
	Written       *prometheus.CounterVec
	Dropped       prometheus.Counter
	InsertErrors  prometheus.Counter
	BatchRows     prometheus.Histogram
	InsertSeconds prometheus.Histogram
	QueuedBatches prometheus.Gauge
	// Latency is, per inserted batch, the time from its oldest flow's event
	// time to the insert's acknowledgement: an upper bound of end-to-end
	// latency for every flow of the batch.
	Latency prometheus.Histogram
	// Rejected counts flows ClickHouse refused for good (a data or
	// statement error, not an outage): not retried, set aside.
	Rejected prometheus.Counter
	// SpoolErrors counts failed spool appends and seals (op label).
	SpoolErrors *prometheus.CounterVec
	// SpoolDamaged counts spool records found damaged and skipped (kind:
	// corrupt, or torn by a crash mid-write).
	SpoolDamaged *prometheus.CounterVec
	// StorageFailing is 1 while a failure stops flows from being stored.
	StorageFailing prometheus.Gauge
}

// NewWriterMetrics creates the metrics and registers them with reg (nil: not registered).
func NewWriterMetrics(reg prometheus.Registerer) *WriterMetrics {
	m := &WriterMetrics{
		Written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_flows_written_total",
			Help: "Flow records inserted into ClickHouse, by source and verdict."}, []string{"source", "verdict"}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_flows_dropped_total",
			Help: "Flow records accepted but not inserted, without a spool (--no-spool): a final flush at shutdown failed, or ClickHouse refused them for good."}),
		InsertErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_clickhouse_insert_errors_total",
			Help: "Failed ClickHouse insert attempts (each is retried)."}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowwarden_clickhouse_batch_rows",
			Help: "Rows per inserted batch.", Buckets: prometheus.ExponentialBuckets(10, 4, 8)}),
		InsertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowwarden_clickhouse_insert_duration_seconds",
			Help: "Time to insert one batch.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		QueuedBatches: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_clickhouse_queued_batches",
			Help: "Full batches (or spool segments) waiting to be inserted."}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowwarden_ingest_latency_seconds",
			Help:    "Per inserted batch, event time of its oldest flow to insert acknowledgement.",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 30, 60, 300}}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_clickhouse_rejected_flows_total",
			Help: "Flows ClickHouse refused for good (data or statement errors): not retried; spool segments are set aside under <spool>/rejected."}),
		SpoolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_spool_errors_total",
			Help: "Failed spool operations: append (flows refused to the source) and seal (a segment waits to be handed over)."}, []string{"op"}),
		SpoolDamaged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_spool_damaged_records_total",
			Help: "Spool records skipped when read back: corrupt (checksum or encoding wrong) or torn (cut short by a crash mid-write)."}, []string{"kind"}),
		StorageFailing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_storage_failing",
			Help: "1 while a failure stops flows from being stored (spool append or seal, ClickHouse inserts); /healthz says which."}),
	}
	if reg != nil {
		reg.MustRegister(m.Written, m.Dropped, m.InsertErrors, m.BatchRows, m.InsertSeconds, m.QueuedBatches, m.Latency,
			m.Rejected, m.SpoolErrors, m.SpoolDamaged, m.StorageFailing)
	}
	return m
}

// ErrWriterClosed is returned by Write after the writer has stopped.
var ErrWriterClosed = errors.New("writer is stopped")

// lane is one batch being filled.
type lane struct {
	mu      sync.Mutex
	cur     *columns
	started time.Time // when cur got its first row
	// With DayBatches: the day (Unix days, UTC) the lane's rows are on,
	// and gone once the lane has left Writer.days (a writer holding it
	// then looks the day up again).
	day  int64
	gone bool
}

type pending struct {
	cols *columns
	seq  uint64
	done chan error // non-nil for Flush requests
}

// Writer batches flows and inserts them over the native protocol. Write may
// be called from many goroutines; Run owns the inserters. Several inserts run
// at once (Inserters), so the server works on more than one batch at a time.
type Writer struct {
	cfg     WriterConfig
	opts    chgo.Options
	metrics *WriterMetrics
	log     *slog.Logger
	insert  string

	mu     sync.Mutex
	closed bool // guarded by mu
	// stopped is closed for the batching path: read under a lane's lock,
	// set before Run takes the lanes' last batches.
	stopped atomic.Bool
	// lanes are the batches being filled (Lanes of them); Write fills
	// whichever is free, so writers on several goroutines fill batches
	// in parallel.
	lanes []*lane
	// With DayBatches, days replaces lanes: one lane per open day.
	dayMu   sync.Mutex
	days    map[int64]*lane // guarded by dayMu
	dayRows atomic.Int64    // rows held in the days' batches
	// closedCols is the (empty, never filled) batch of a closed day's lane.
	closedCols *columns
	next       atomic.Uint32  // the lane Write tries first
	seq        atomic.Uint64  // batches taken so far
	sending    sync.WaitGroup // callers between the stopped check and the queue

	queue chan pending
	// free holds emptied batches for reuse. Unlike a sync.Pool it is not
	// emptied by garbage collections, so a batch's column buffers, grown
	// once, serve every later batch (regrowing them cost a tenth of the
	// file import's CPU time).
	free  chan *columns
	spool *spool // nil without SpoolDir, and until Open

	openOnce sync.Once
	openErr  error

	doneMu   sync.Mutex
	doneCond *sync.Cond
	finished map[uint64]bool // completed batches above the watermark
	low      uint64          // every batch with seq <= low is complete

	healthMu  sync.Mutex
	insertErr error // the latest insert attempt's failure; nil after a success
}

// NewWriter returns a writer for the ClickHouse named by dsn (the database
// must exist and be migrated; see Open and Migrate). It does no I/O: the
// spool is opened by (*Writer).Open, or on first use.
func NewWriter(cfg WriterConfig, dsn string, metrics *WriterMetrics, log *slog.Logger) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	opts, err := nativeOptions(dsn)
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewWriterMetrics(nil)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{
		cfg: cfg, opts: opts, metrics: metrics, log: log.With("component", "clickhouse-writer"),
		insert:   "INSERT INTO " + QuoteIdent(cfg.Table) + " VALUES",
		queue:    make(chan pending, cfg.QueueBatches),
		finished: map[uint64]bool{},
	}
	w.doneCond = sync.NewCond(&w.doneMu)
	w.free = make(chan *columns, cfg.QueueBatches+cfg.Inserters+cfg.Lanes)
	if cfg.DayBatches > 0 {
		w.days = map[int64]*lane{}
		w.closedCols = newColumns()
		w.free = make(chan *columns, cfg.QueueBatches+cfg.Inserters+cfg.DayBatches)
		return w, nil
	}
	w.lanes = make([]*lane, cfg.Lanes)
	for i := range w.lanes {
		w.lanes[i] = &lane{cur: w.newColumns()}
	}
	return w, nil
}

// Open opens the spool (with SpoolDir): it reads the segments a previous
// run left, sealing those a crash left open, so that they are inserted
// first and ResumePoint sees them. It is done once; Run, Write, Failure,
// SpooledUntil and ResumePoint call it, so a caller calls it only to meet
// its error at start-up, before any flow arrives (serve's ordered start).
func (w *Writer) Open() error {
	w.openOnce.Do(func() {
		if w.cfg.SpoolDir == "" {
			return
		}
		sp, err := openSpool(w.cfg.SpoolDir, w.cfg.SpoolMaxBytes, w.cfg.SpoolFsync, w.cfg.BatchSize, w.log)
		if err != nil {
			w.openErr = err
			return
		}
		sp.onError = func(op string) {
			w.metrics.SpoolErrors.WithLabelValues(op).Inc()
			w.metrics.StorageFailing.Set(1)
		}
		w.spool = sp
	})
	return w.openErr
}

// Failure reports what stops flows from being stored right now: the spool
// refusing appends or seals, or inserts into ClickHouse failing (each
// until the next success). nil when storage works.
func (w *Writer) Failure() error {
	var errs []error
	if err := w.Open(); err != nil {
		errs = append(errs, err)
	}
	if w.spool != nil {
		if err := w.spool.failure(); err != nil {
			errs = append(errs, err)
		}
	}
	w.healthMu.Lock()
	if w.insertErr != nil {
		errs = append(errs, fmt.Errorf("inserts into ClickHouse failing: %w", w.insertErr))
	}
	w.healthMu.Unlock()
	err := errors.Join(errs...)
	if err != nil {
		w.metrics.StorageFailing.Set(1)
	} else {
		w.metrics.StorageFailing.Set(0)
	}
	return err
}

func (w *Writer) insertOutcome(err error) {
	w.healthMu.Lock()
	w.insertErr = err
	w.healthMu.Unlock()
	_ = w.Failure() // sets the gauge
}

// SpooledUntil is the time of the newest flow in the spool (zero without
// one): with the newest stored flow, the point a source may resume from.
func (w *Writer) SpooledUntil() time.Time {
	if w.Open() != nil || w.spool == nil {
		return time.Time{}
	}
	return w.spool.newestTime()
}

func (w *Writer) newColumns() *columns {
	select {
	case c := <-w.free:
		return c
	default:
		c := newColumns()
		// Days' batches are not preallocated: most days of an import
		// may hold a few rows.
		if w.cfg.Preallocate && w.cfg.DayBatches == 0 {
			c.reserve(w.cfg.BatchSize)
		}
		return c
	}
}

// putColumns empties a batch and keeps it for reuse.
func (w *Writer) putColumns(c *columns) {
	c.reset()
	select {
	case w.free <- c:
	default:
	}
}

// Write accepts flows for insertion. It blocks while the queue is full
// (backpressure) and fails only after the writer has stopped; accepted flows
// are then the writer's responsibility.
func (w *Writer) Write(_ context.Context, flows ...schema.Flow) error {
	if w.cfg.SpoolDir != "" {
		if err := w.Open(); err != nil {
			return err
		}
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return ErrWriterClosed
		}
		return w.spool.append(flows)
	}
	if w.days != nil {
		return w.writeDays(flows)
	}
	// A lane's lock is taken once per run of flows that fits in its
	// batch, not once per flow.
	for len(flows) > 0 {
		l := w.lockLane()
		if w.stopped.Load() {
			l.mu.Unlock()
			return ErrWriterClosed
		}
		if l.cur.len() == 0 {
			l.started = time.Now()
		}
		n := min(len(flows), w.cfg.BatchSize-l.cur.len())
		for i := range n {
			l.cur.add(&flows[i])
		}
		flows = flows[n:]
		if l.cur.len() < w.cfg.BatchSize {
			l.mu.Unlock()
			continue
		}
		p := w.takeLocked(l, nil)
		l.mu.Unlock()
		w.send(p)
	}
	return nil
}

// lockLane locks a lane and returns it: the first free one from a
// rotating start, or else waits for that start.
func (w *Writer) lockLane() *lane {
	if len(w.lanes) == 1 {
		w.lanes[0].mu.Lock()
		return w.lanes[0]
	}
	start := int(w.next.Add(1)) % len(w.lanes)
	for i := range w.lanes {
		if l := w.lanes[(start+i)%len(w.lanes)]; l.mu.TryLock() {
			return l
		}
	}
	l := w.lanes[start]
	l.mu.Lock()
	return l
}

// takeLocked swaps out a lane's batch as a numbered pending item; the
// caller holds the lane's lock and must send the item.
func (w *Writer) takeLocked(l *lane, done chan error) pending {
	p := pending{cols: l.cur, seq: w.seq.Add(1), done: done}
	l.cur = w.newColumns()
	w.sending.Add(1)
	return p
}

func (w *Writer) send(p pending) {
	defer w.sending.Done()
	w.queue <- p
	w.metrics.QueuedBatches.Set(float64(len(w.queue)))
}

// Flush inserts everything written before it was called and waits for that.
func (w *Writer) Flush(ctx context.Context) error {
	// The other lanes' batches first; the first lane's, taken last, has
	// the highest number, which the wait below is for.
	var p pending
	if w.days != nil {
		var err error
		if p, err = w.flushDays(); err != nil {
			return err
		}
	}
	for i := len(w.lanes) - 1; i >= 0; i-- {
		l := w.lanes[i]
		l.mu.Lock()
		if w.stopped.Load() {
			l.mu.Unlock()
			return ErrWriterClosed
		}
		if i > 0 && l.cur.len() == 0 {
			l.mu.Unlock()
			continue
		}
		var done chan error
		if i == 0 {
			done = make(chan error, 1)
		}
		p = w.takeLocked(l, done)
		l.mu.Unlock()
		w.send(p)
	}
	var err error
	select {
	case err = <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Earlier batches may still be in flight on other inserters.
	waited := make(chan struct{})
	go func() {
		w.doneMu.Lock()
		for w.low < p.seq {
			w.doneCond.Wait()
		}
		w.doneMu.Unlock()
		close(waited)
	}()
	select {
	case <-waited:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) markDone(seq uint64) {
	w.doneMu.Lock()
	w.finished[seq] = true
	for w.finished[w.low+1] {
		delete(w.finished, w.low+1)
		w.low++
	}
	w.doneMu.Unlock()
	w.doneCond.Broadcast()
}

// inserters starts cfg.Inserters goroutines, each running work with a
// ClickHouse client of its own (dialled on first use, closed when work
// returns); wg counts them.
func (w *Writer) inserters(wg *sync.WaitGroup, work func(client **chgo.Client)) {
	for range w.cfg.Inserters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var client *chgo.Client
			defer func() {
				if client != nil {
					client.Close()
				}
			}()
			work(&client)
		}()
	}
}

// Run inserts batches until ctx ends, then flushes what remains and returns.
// Inserts in flight when ctx ends are allowed to finish; retries go on for
// at most ShutdownTimeout after ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	if err := w.Open(); err != nil {
		return err
	}
	if w.spool != nil {
		return w.runSpool(ctx)
	}
	ictx, icancel := context.WithCancel(context.WithoutCancel(ctx))
	defer icancel()
	var lost atomic.Int64
	var wg sync.WaitGroup
	w.inserters(&wg, func(client **chgo.Client) {
		for p := range w.queue {
			w.metrics.QueuedBatches.Set(float64(len(w.queue)))
			err := w.insertWithRetry(ictx, client, p.cols)
			if err != nil {
				lost.Add(int64(p.cols.len()))
				w.metrics.Dropped.Add(float64(p.cols.len()))
				if IsPermanent(err) {
					w.metrics.Rejected.Add(float64(p.cols.len()))
				}
				w.log.Error("flows not inserted", "rows", p.cols.len(), "err", err)
			} else {
				w.putColumns(p.cols)
			}
			w.markDone(p.seq)
			if p.done != nil {
				p.done <- err
			}
		}
	})
	tick := time.NewTicker(max(w.cfg.FlushInterval/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			w.expireDays()
			for _, l := range w.lanes {
				l.mu.Lock()
				if w.stopped.Load() || l.cur.len() == 0 || time.Since(l.started) < w.cfg.FlushInterval {
					l.mu.Unlock()
					continue
				}
				p := w.takeLocked(l, nil)
				l.mu.Unlock()
				w.send(p)
			}
		case <-ctx.Done():
			// No new batches; hand over the last ones (the lanes'
			// inserts then run side by side), wait for callers still
			// handing theirs over, then let the inserters drain.
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			w.stopped.Store(true)
			var last []pending
			for _, l := range w.allDays() {
				l.mu.Lock()
				if l.cur.len() > 0 {
					last = append(last, w.takeClosingLocked(l))
				}
				l.mu.Unlock()
			}
			for _, l := range w.lanes {
				l.mu.Lock()
				if l.cur.len() > 0 {
					last = append(last, w.takeLocked(l, nil))
				}
				l.mu.Unlock()
			}
			timer := time.AfterFunc(w.cfg.ShutdownTimeout, icancel)
			defer timer.Stop()
			for _, p := range last {
				w.send(p)
			}
			w.sending.Wait()
			close(w.queue)
			wg.Wait()
			if n := lost.Load(); n > 0 {
				return fmt.Errorf("writer stopped with %d flows not inserted", n)
			}
			return nil
		}
	}
}

// PermanentError is an insert ClickHouse refused for a reason that retrying
// cannot change (a data or statement error); see IsPermanent.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "refused for good: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// permanentCodes are the ClickHouse exceptions that retrying the same
// insert cannot cure: the rows or the statement are wrong. Anything else
// (connection errors, timeouts, overload, a missing table or a credential
// that an operator may fix) is retried.
var permanentCodes = []proto.Error{
	proto.ErrSyntaxError, proto.ErrTypeMismatch, proto.ErrCannotParseText, proto.ErrCannotParseInputAssertionFailed,
	proto.ErrCannotParseDate, proto.ErrCannotParseDatetime, proto.ErrCannotConvertType, proto.ErrArgumentOutOfBound,
	proto.ErrIncorrectData, proto.ErrTooLargeStringSize, proto.ErrNumberOfColumnsDoesntMatch, proto.ErrThereIsNoColumn,
	proto.ErrNotFoundColumnInBlock, proto.ErrIllegalTypeOfArgument, proto.ErrIllegalColumn, proto.ErrBadArguments,
	proto.ErrValueIsOutOfRangeOfDataType, proto.ErrIncorrectNumberOfColumns, proto.ErrCannotInsertNullInOrdinaryColumn,
	proto.ErrViolatedConstraint,
}

// IsPermanent reports whether an insert error is one retrying cannot cure.
func IsPermanent(err error) bool {
	var p *PermanentError
	if errors.As(err, &p) {
		return true
	}
	return chgo.IsErr(err, permanentCodes...)
}

// insertWithRetry inserts one batch, retrying transient failures with
// exponential backoff and jitter (so that writers restarted together do
// not retry in step) until it succeeds or ctx ends. A permanent failure
// (IsPermanent) is returned at once as a *PermanentError. *client is the
// inserter's connection, (re)opened as needed.
func (w *Writer) insertWithRetry(ctx context.Context, client **chgo.Client, cols *columns) error {
	if cols.len() == 0 {
		return nil
	}
	bo := &backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: w.cfg.MaxBackoff}
	for attempt := 1; ; attempt++ {
		err := w.insertOnce(ctx, client, cols)
		w.insertOutcome(err)
		if err == nil {
			return nil
		}
		w.metrics.InsertErrors.Inc()
		if IsPermanent(err) {
			return &PermanentError{Err: err}
		}
		wait := bo.NextBackOff()
		w.log.Warn("insert failed; will retry", "rows", cols.len(), "attempt", attempt, "backoff", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("insert of %d rows abandoned: %w (last error: %v)", cols.len(), ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (w *Writer) insertOnce(ctx context.Context, client **chgo.Client, cols *columns) error {
	start := time.Now()
	if *client == nil || (*client).IsClosed() {
		c, err := chgo.Dial(ctx, w.opts)
		if err != nil {
			return fmt.Errorf("connect to ClickHouse %s: %w", w.opts.Address, err)
		}
		*client = c
	}
	err := (*client).Do(ctx, chgo.Query{
		Body:  w.insert,
		Input: cols.input,
		Settings: []chgo.Setting{
			// A batch that was inserted but whose acknowledgement was lost
			// must not be inserted twice when retried, nor counted twice in
			// the rollups.
			chgo.SettingInt("deduplicate_blocks_in_dependent_materialized_views", 1),
			// Into a Distributed table (a cluster), return only when the
			// shards have the rows: the spool may then let go of them.
			chgo.SettingInt("distributed_foreground_insert", 1),
			// The rollup views and the flows part are computed on
			// separate threads: an insert's server time is otherwise their
			// sum, on one core.
			chgo.SettingInt("parallel_view_processing", 1),
			{Key: "insert_deduplication_token", Value: cols.token(), Important: true},
		},
	})
	if err != nil {
		// The connection state is unknown after a failed insert: start afresh.
		(*client).Close()
		*client = nil
		return fmt.Errorf("insert %d rows: %w", cols.len(), err)
	}
	w.metrics.InsertSeconds.Observe(time.Since(start).Seconds())
	w.metrics.BatchRows.Observe(float64(cols.len()))
	if !cols.oldest.IsZero() {
		w.metrics.Latency.Observe(time.Since(cols.oldest).Seconds())
	}
	cols.counts(func(source, verdict string, n int) {
		w.metrics.Written.WithLabelValues(source, verdict).Add(float64(n))
	})
	return nil
}

// runSpool drains the spool: sealed segments are inserted oldest first by
// Inserters drainers; the open segment is sealed after FlushInterval. When
// ctx ends, the open segment is sealed and draining goes on for at most
// ShutdownTimeout; what is left stays in the spool for the next start.
func (w *Writer) runSpool(ctx context.Context) error {
	ictx, icancel := context.WithCancel(context.WithoutCancel(ctx))
	defer icancel()
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	w.inserters(&wg, func(client **chgo.Client) {
		for {
			name := w.spool.claim()
			if name == "" {
				select {
				case <-stopping:
					if sealed, _ := w.spool.pending(); sealed == 0 {
						return
					}
				case <-ictx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			if err := w.insertSegment(ictx, client, name); err != nil {
				w.spool.unclaim(name)
				if ictx.Err() != nil {
					return
				}
				w.log.Error("spool segment not inserted", "segment", name, "err", err)
				select { // not in a tight loop
				case <-ictx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	})
	tick := time.NewTicker(max(w.cfg.FlushInterval/4, 10*time.Millisecond))
	defer tick.Stop()
	var sealErr string // logged once per distinct failure, not every tick
	for {
		select {
		case <-tick.C:
			if err := w.spool.seal(w.cfg.FlushInterval); err != nil {
				if err.Error() != sealErr {
					w.log.Error("sealing spool segment; retrying", "err", err)
				}
				sealErr = err.Error()
			} else {
				sealErr = ""
			}
			sealed, _ := w.spool.pending()
			w.metrics.QueuedBatches.Set(float64(sealed))
			_ = w.Failure() // keeps the gauge current
		case <-ctx.Done():
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			if err := w.spool.seal(0); err != nil {
				w.log.Error("sealing spool segment", "err", err)
			}
			timer := time.AfterFunc(w.cfg.ShutdownTimeout, icancel)
			defer timer.Stop()
			close(stopping)
			wg.Wait()
			if sealed, _ := w.spool.pending(); sealed > 0 {
				w.log.Warn("flows left in the spool for the next start", "segments", sealed, "dir", w.cfg.SpoolDir)
			}
			return nil
		}
	}
}

// insertSegment inserts one spool segment (retrying until it succeeds or
// ctx ends) and deletes it. Damaged records are counted and skipped; a
// segment ClickHouse refuses for good is set aside, not retried.
func (w *Writer) insertSegment(ctx context.Context, client **chgo.Client, name string) error {
	// Each record's flows go into the batch as they are decoded: the
	// segment is not held as flows, and its buffers are reused.
	cols := w.newColumns()
	defer w.putColumns(cols)
	buf := segmentBufs.Get().(*segmentBuf)
	defer segmentBufs.Put(buf)
	dmg, err := scanSegment(filepath.Join(w.cfg.SpoolDir, name), buf, cols.reserve, func(record []schema.Flow) {
		for i := range record {
			cols.add(&record[i])
		}
	})
	switch {
	case err != nil && !dmg.Legacy:
		return err // unreadable: retried
	case err != nil:
		// A torn tail after a crash: insert what decoded; the rest was
		// never acknowledged and the source resumes after what is stored.
		w.log.Warn("spool segment (written before checksums) cut short", "err", err)
	case dmg.Corrupt > 0:
		w.metrics.SpoolDamaged.WithLabelValues("corrupt").Add(float64(dmg.Corrupt))
		w.log.Error("spool segment damaged: corrupt records skipped, the rest is inserted", "segment", name, "records_skipped", dmg.Corrupt, "flows_kept", cols.len())
	}
	if dmg.TornBytes > 0 {
		// Only the segment being written when a crash came can end torn:
		// that record was never acknowledged to the source.
		w.metrics.SpoolDamaged.WithLabelValues("torn").Inc()
		w.log.Warn("spool segment ends with a torn record (a crash mid-write); skipped", "segment", name, "bytes", dmg.TornBytes)
	}
	cols.dedupToken = "spool-" + strings.TrimSuffix(name, segmentSuffix)
	if err := w.insertWithRetry(ctx, client, cols); err != nil {
		var perm *PermanentError
		if !errors.As(err, &perm) {
			return err
		}
		to, merr := w.spool.setAside(name)
		if merr != nil {
			return errors.Join(err, merr)
		}
		w.metrics.Rejected.Add(float64(cols.len()))
		w.log.Error("ClickHouse refused a spool segment for good; set aside (see RUNBOOK.md, FlowwardenFlowsRejected)", "segment", to, "flows", cols.len(), "err", perm.Err)
		return nil
	}
	if err := w.spool.remove(name); err != nil {
		// Not inserted again: deleted by a later seal.
		w.log.Warn("spool segment inserted but not deleted; deleting it later", "segment", name, "err", err)
	}
	return nil
}

// ResumePoint is where a source should resume after a restart: the newest
// flow time that is durable (stored in ClickHouse or in the spool), and the
// identities (FlowKey) of the flows already held at exactly that time, which
// the source will send again and must drop.
func (w *Writer) ResumePoint(ctx context.Context, conn driver.Conn, source string) (time.Time, []string, error) {
	since, _, keys, err := w.ResumePointOf(ctx, conn, source, nil)
	return since, keys, err
}

// WriteAll stores flows through a Writer of its own (default
// configuration) and returns once ClickHouse has them all: for one-off
// loads of flows already in memory, such as fixtures and small imports.
func WriteAll(ctx context.Context, dsn string, flows []schema.Flow) error {
	w, err := NewWriter(DefaultWriterConfig(), dsn, nil, nil)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	werr := w.Write(ctx, flows...)
	stop()
	if err := <-done; err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("store flows: %w", werr)
	}
	return nil
}
