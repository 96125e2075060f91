package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowwarden/flowwarden/schema"
)

// FindingStore writes findings to the findings table as they open, change
// and resolve. Finding never blocks: changes are buffered and inserted by
// Run about once a second; a full buffer drops the change and counts it
// (the next change of the same finding carries its full state).
type FindingStore struct {
	conn    driver.Conn
	log     *slog.Logger
	dropped prometheus.Counter
	mu      sync.Mutex
	buf     []schema.Finding
	wake    chan struct{}
}

const maxBufferedFindings = 10000

// NewFindingStore returns a store over conn; reg may be nil.
func NewFindingStore(conn driver.Conn, reg prometheus.Registerer, log *slog.Logger) *FindingStore {
	if log == nil {
		log = slog.Default()
	}
	s := &FindingStore{conn: conn, log: log.With("component", "finding-store"), wake: make(chan struct{}, 1),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowwarden_findings_store_dropped_total",
			Help: "Finding changes not stored because the buffer was full."})}
	if reg != nil {
		reg.MustRegister(s.dropped)
	}
	return s
}

// Finding buffers a finding's new state.
func (s *FindingStore) Finding(f schema.Finding) {
	if f.Query == "" {
		RenderQuery(&f)
	}
	s.mu.Lock()
	if len(s.buf) >= maxBufferedFindings {
		s.mu.Unlock()
		s.dropped.Inc()
		return
	}
	s.buf = append(s.buf, f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run inserts buffered findings until ctx ends, then once more.
func (s *FindingStore) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return s.Flush(fctx)
		case <-s.wake:
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		if err := s.Flush(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("storing findings failed; will retry", "err", err)
		}
	}
}

// Flush inserts what is buffered now; on failure it stays buffered.
func (s *FindingStore) Flush(ctx context.Context) error {
	s.mu.Lock()
	batch := s.buf
	s.buf = nil
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.insert(ctx, batch)
	if err != nil {
		s.mu.Lock()
		s.buf = append(batch, s.buf...)
		s.mu.Unlock()
	}
	return err
}

func (s *FindingStore) insert(ctx context.Context, batch []schema.Finding) error {
	b, err := s.conn.PrepareBatch(foreground(ctx), "INSERT INTO findings (id, detector, severity, namespace, workload, peer, summary, start, end, status, flows, evidence, query, updated_at)")
	if err != nil {
		return fmt.Errorf("store findings: %w", err)
	}
	now := time.Now()
	for i, f := range batch {
		ev, _ := json.Marshal(f.Record().Evidence)
		if err := b.Append(f.ID, f.Detector, string(f.Severity), f.Namespace, f.Workload, f.Peer, f.Summary,
			f.Start, f.End, string(f.Status), f.Evidence.Flows, string(ev), f.Query, now.Add(time.Duration(i)*time.Microsecond)); err != nil {
			_ = b.Abort()
			return fmt.Errorf("store findings: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("store findings: %w", err)
	}
	return nil
}

// CounterStore stores counter readings in nft_counters; it is a counter
// sink (ingest.CounterSink) for the nftables poller.
type CounterStore struct{ conn driver.Conn }

// NewCounterStore returns a store that inserts over conn.
func NewCounterStore(conn driver.Conn) *CounterStore { return &CounterStore{conn: conn} }

// WriteCounters inserts one reading (InsertCounters).
func (s *CounterStore) WriteCounters(ctx context.Context, samples []schema.CounterSample) error {
	return InsertCounters(ctx, s.conn, samples)
}

// InsertCounters stores counter readings.
func InsertCounters(ctx context.Context, conn driver.Conn, rows []schema.CounterSample) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := conn.PrepareBatch(foreground(ctx), "INSERT INTO nft_counters (time, node, family, `table`, chain, handle, name, comment, drop, packets, bytes)")
	if err != nil {
		return fmt.Errorf("store nftables counters: %w", err)
	}
	for _, r := range rows {
		if err := b.Append(r.Time, r.Node, r.Family, r.Table, r.Chain, r.Handle, r.Name, r.Comment, r.Drop, r.Packets, r.Bytes); err != nil {
			_ = b.Abort()
			return fmt.Errorf("store nftables counters: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("store nftables counters: %w", err)
	}
	return nil
}

// foreground makes an insert into a Distributed table (a cluster) return
// only when the shards have the rows.
func foreground(ctx context.Context) context.Context {
	return ch.Context(ctx, ch.WithSettings(ch.Settings{"distributed_foreground_insert": 1}))
}
