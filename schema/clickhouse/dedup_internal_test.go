package clickhouse

import (
	"context"
	"net/netip"
	"testing"
	"time"

	chgo "github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// migratedDB is a fresh database with flowwarden's tables (the external
// tests have their own migrated; this package's internal tests cannot use it).
func migratedDB(t *testing.T) (driver.Conn, string) {
	t.Helper()
	dsn, _ := chtest.Database(t)
	conn, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := Migrate(context.Background(), conn, SchemaConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	return conn, dsn
}

// A batch inserted twice with its token is stored once, rollups included.
func TestInsertDeduplicationToken(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	w, err := NewWriter(WriterConfig{}, dsn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cols := newColumns()
	for i := 0; i < 10; i++ {
		cols.add(&schema.Flow{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Source: schema.SourceHubble, Verdict: schema.VerdictForwarded,
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Protocol: "TCP"})
	}
	cols.dedupToken = "spool-test-1"
	var client *chgo.Client
	for i := 0; i < 3; i++ {
		if err := w.insertOnce(ctx, &client, cols); err != nil {
			t.Fatal(err)
		}
	}
	var n, e uint64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM flows), (SELECT sum(flows) FROM edges_5m)").Scan(&n, &e); err != nil {
		t.Fatal(err)
	}
	if n != 10 || e != 10 {
		t.Fatalf("three inserts of one batch gave %d rows and %d rolled-up flows, want 10 and 10", n, e)
	}
}

// Writers opened one after the other on the same (emptied) spool, in one
// process, store their own batches: the spool's segment names, which give
// the deduplication tokens, once repeated after it emptied, and ClickHouse
// took the second writer's first batch for a repeat of the first's.
func TestSpoolReopenedInTheSameProcessStoresNewBatches(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	spoolDir := t.TempDir()
	for run := range 3 {
		cfg := DefaultWriterConfig()
		cfg.SpoolDir = spoolDir
		w, err := NewWriter(cfg, dsn, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(runCtx) }()
		f := schema.Flow{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded,
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Protocol: "TCP", DstPort: uint16(8000 + run)}
		if err := w.Write(ctx, f); err != nil {
			t.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM flows").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("three writers on one spool stored %d flows, want 3", n)
	}
}
