package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	// Table is the table flows are inserted into (default "flows").
	Table string
}

// DefaultWriterConfig returns the defaults.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{BatchSize: 50000, FlushInterval: 2 * time.Second, QueueBatches: 4, MaxBackoff: 10 * time.Second, ShutdownTimeout: 30 * time.Second, Table: "flows"}
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
	if c.Table == "" {
		c.Table = d.Table
	}
	if c.BatchSize < 1 || c.FlushInterval < 0 || c.QueueBatches < 1 {
		return fmt.Errorf("writer: batch size %d, flush interval %s and queue %d must be positive", c.BatchSize, c.FlushInterval, c.QueueBatches)
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
}

// NewWriterMetrics creates the metrics and registers them with reg (nil: not registered).
func NewWriterMetrics(reg prometheus.Registerer) *WriterMetrics {
	m := &WriterMetrics{
		Written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_flows_written_total",
			Help: "Flow records inserted into ClickHouse, by source and verdict."}, []string{"source", "verdict"}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_flows_dropped_total",
			Help: "Flow records accepted but not inserted (only when a final flush at shutdown fails)."}),
		InsertErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_clickhouse_insert_errors_total",
			Help: "Failed ClickHouse insert attempts (each is retried)."}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowwarden_clickhouse_batch_rows",
			Help: "Rows per inserted batch.", Buckets: prometheus.ExponentialBuckets(10, 4, 8)}),
		InsertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowwarden_clickhouse_insert_duration_seconds",
			Help: "Time to insert one batch.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		QueuedBatches: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_clickhouse_queued_batches",
			Help: "Full batches waiting to be inserted."}),
	}
	if reg != nil {
		reg.MustRegister(m.Written, m.Dropped, m.InsertErrors, m.BatchRows, m.InsertSeconds, m.QueuedBatches)
	}
	return m
}

// ErrWriterClosed is returned by Write after the writer has stopped.
var ErrWriterClosed = errors.New("writer is stopped")

type pending struct {
	cols *columns
	done chan error // non-nil for Flush requests
}

// Writer batches flows and inserts them over the native protocol. Write may
// be called from many goroutines; Run does the inserts.
type Writer struct {
	cfg     WriterConfig
	conn    driver.Conn
	metrics *WriterMetrics
	log     *slog.Logger
	insert  string

	mu      sync.Mutex
	cur     *columns
	started time.Time // when cur got its first row
	closed  bool

	queue   chan pending
	stopped chan struct{}
	pool    sync.Pool
}

// NewWriter returns a writer; it does no I/O until Run.
func NewWriter(cfg WriterConfig, conn driver.Conn, metrics *WriterMetrics, log *slog.Logger) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("writer: no ClickHouse connection")
	}
	if metrics == nil {
		metrics = NewWriterMetrics(nil)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{
		cfg: cfg, conn: conn, metrics: metrics, log: log.With("component", "clickhouse-writer"),
		insert:  "INSERT INTO " + QuoteIdent(cfg.Table) + " (" + strings.Join(flowColumns, ", ") + ")",
		queue:   make(chan pending, cfg.QueueBatches),
		stopped: make(chan struct{}),
	}
	w.pool.New = func() any { return &columns{} }
	w.cur = w.newColumns()
	return w, nil
}

func (w *Writer) newColumns() *columns { return w.pool.Get().(*columns) }

// Write accepts flows for insertion. It blocks while the queue is full
// (backpressure) and returns an error only when ctx ends or the writer has
// stopped; accepted flows are then the writer's responsibility.
func (w *Writer) Write(ctx context.Context, flows ...schema.Flow) error {
	for i := range flows {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return ErrWriterClosed
		}
		if w.cur.len() == 0 {
			w.started = time.Now()
		}
		w.cur.add(&flows[i])
		var full *columns
		if w.cur.len() >= w.cfg.BatchSize {
			full, w.cur = w.cur, w.newColumns()
		}
		w.mu.Unlock()
		if full != nil {
			if err := w.enqueue(ctx, pending{cols: full}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Writer) enqueue(ctx context.Context, p pending) error {
	select {
	case w.queue <- p:
		w.metrics.QueuedBatches.Set(float64(len(w.queue)))
		return nil
	case <-ctx.Done():
		// The batch was accepted; hand it over even though the caller gives up.
		select {
		case w.queue <- p:
			return nil
		case <-w.stopped:
			w.metrics.Dropped.Add(float64(p.cols.len()))
			return ErrWriterClosed
		}
	case <-w.stopped:
		w.metrics.Dropped.Add(float64(p.cols.len()))
		return ErrWriterClosed
	}
}

// Flush inserts everything written so far and waits for it.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	cols := w.cur
	w.cur = w.newColumns()
	w.mu.Unlock()
	p := pending{cols: cols, done: make(chan error, 1)}
	if err := w.enqueue(ctx, p); err != nil {
		return err
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run inserts batches until ctx ends, then flushes what remains and returns.
// An insert in flight when ctx ends is allowed to finish; retries go on for at
// most ShutdownTimeout after ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	ictx, icancel := context.WithCancel(context.WithoutCancel(ctx))
	defer icancel()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		select {
		case <-time.After(w.cfg.ShutdownTimeout):
			icancel()
		case <-finished:
		}
	}()
	tick := time.NewTicker(max(w.cfg.FlushInterval/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case p := <-w.queue:
			w.metrics.QueuedBatches.Set(float64(len(w.queue)))
			w.process(ictx, p)
		case <-tick.C:
			w.mu.Lock()
			var due *columns
			if w.cur.len() > 0 && time.Since(w.started) >= w.cfg.FlushInterval {
				due, w.cur = w.cur, w.newColumns()
			}
			w.mu.Unlock()
			if due != nil {
				w.process(ictx, pending{cols: due})
			}
		case <-ctx.Done():
			return w.shutdown(ictx)
		}
	}
}

func (w *Writer) shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	last := w.cur
	w.cur = &columns{}
	w.mu.Unlock()
	var lost int
	drain := func(p pending) {
		if err := w.process(ctx, p); err != nil {
			lost += p.cols.len()
		}
	}
	drainQueue := func() {
		for {
			select {
			case p := <-w.queue:
				drain(p)
			default:
				return
			}
		}
	}
	drainQueue()
	drain(pending{cols: last})
	close(w.stopped)
	// A writer that was blocked in enqueue sees stopped; drain what got in.
	drainQueue()
	if lost > 0 {
		w.metrics.Dropped.Add(float64(lost))
		w.log.Error("flows not inserted at shutdown", "rows", lost)
		return fmt.Errorf("writer stopped with %d flows not inserted", lost)
	}
	return nil
}

func (w *Writer) process(ctx context.Context, p pending) error {
	err := w.insertWithRetry(ctx, p.cols)
	if err == nil {
		p.cols.reset()
		w.pool.Put(p.cols)
	}
	if p.done != nil {
		p.done <- err
	}
	return err
}

// insertWithRetry inserts one batch, retrying with exponential backoff until
// it succeeds or ctx ends.
func (w *Writer) insertWithRetry(ctx context.Context, cols *columns) error {
	if cols.len() == 0 {
		return nil
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := w.insertOnce(ctx, cols)
		if err == nil {
			return nil
		}
		w.metrics.InsertErrors.Inc()
		w.log.Warn("insert failed; will retry", "rows", cols.len(), "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("insert of %d rows abandoned: %w (last error: %v)", cols.len(), ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

func (w *Writer) insertOnce(ctx context.Context, cols *columns) error {
	start := time.Now()
	ictx := ch.Context(ctx, ch.WithSettings(ch.Settings{
		// A retried batch must not count twice in the rollups either.
		"deduplicate_blocks_in_dependent_materialized_views": 1,
		// A batch that was inserted but whose acknowledgement was lost must
		// not be inserted twice when retried.
		"insert_deduplication_token": cols.token(),
	}))
	batch, err := w.conn.PrepareBatch(ictx, w.insert)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	if err := cols.appendTo(batch); err != nil {
		_ = batch.Abort()
		return err
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	w.metrics.InsertSeconds.Observe(time.Since(start).Seconds())
	w.metrics.BatchRows.Observe(float64(cols.len()))
	w.countWritten(cols)
	return nil
}

func (w *Writer) countWritten(cols *columns) {
	type key struct{ source, verdict string }
	counts := map[key]int{}
	for i := range cols.len() {
		counts[key{cols.source[i], cols.verdict[i]}]++
	}
	for k, n := range counts {
		w.metrics.Written.WithLabelValues(k.source, k.verdict).Add(float64(n))
	}
}
