package clickhouse_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func countFlows(t *testing.T, st *clickhouse.Storage) {
	t.Helper()
	var n uint64
	if err := st.Conn.QueryRow(context.Background(), "SELECT count() FROM flows").Scan(&n); err != nil {
		t.Fatalf("the flows table is not there: %v", err)
	}
}

// TestOpenStorageExternal: with a DSN, a reader refuses a server without
// the database and creates nothing; a writer creates and migrates it, after
// which a reader opens it; a cluster is checked and needs a DSN.
func TestOpenStorageExternal(t *testing.T) {
	ctx := context.Background()
	dsn, db := chtest.Database(t)
	_, err := clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DSN: dsn, Existing: true}, nil)
	u, perr := url.Parse(dsn)
	if perr != nil {
		t.Fatal(perr)
	}
	password, _ := u.User.Password()
	if !errors.Is(err, clickhouse.ErrNoDatabase) || !strings.Contains(err.Error(), "--clickhouse") || (password != "" && strings.Contains(err.Error(), password)) {
		t.Fatalf("reader on a server without the database: got %v, want ErrNoDatabase naming --clickhouse, password redacted", err)
	}
	st, err := clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DSN: dsn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Server != nil || st.DSN != dsn {
		t.Errorf("external store: server %v, DSN %q; want none and %q", st.Server, st.DSN, dsn)
	}
	countFlows(t, st)
	st.Close()

	st, err = clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DSN: dsn, Existing: true}, nil)
	if err != nil {
		t.Fatalf("reader after the writer created %s: %v", db, err)
	}
	countFlows(t, st)
	r, err := st.OpenReader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ping(ctx); err != nil {
		t.Error(err)
	}
	r.Close()
	st.Close()

	_, err = clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DSN: dsn, Existing: true, Schema: clickhouse.SchemaConfig{Cluster: "nope"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `--clickhouse-cluster: cluster "nope" is not defined`) {
		t.Errorf("reader with an unknown cluster: %v", err)
	}
	_, err = clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DataDir: t.TempDir(), Schema: clickhouse.SchemaConfig{Cluster: "c"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "needs --clickhouse") {
		t.Errorf("cluster on the embedded ClickHouse: %v", err)
	}
}

// TestOpenStorageEmbedded: without a DSN a reader refuses an empty data dir
// and leaves it empty; a writer starts the embedded server there and
// migrates; while it runs, a second open uses it instead of starting
// another, and its reader login cannot write.
func TestOpenStorageEmbedded(t *testing.T) {
	if chtest.Embedded(t) == nil {
		t.Skip("tests use an external ClickHouse; the embedded one may not be there")
	}
	ctx := context.Background()
	dir := t.TempDir()
	_, err := clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DataDir: dir, Existing: true}, nil)
	if !errors.Is(err, clickhouse.ErrNoDatabase) || !strings.Contains(err.Error(), "--data-dir "+dir) {
		t.Fatalf("reader on an empty data dir: got %v, want ErrNoDatabase naming %s", err, dir)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the reader created %d entries in the empty data dir", len(entries))
	}

	st, err := clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Server == nil {
		t.Fatal("no embedded server started")
	}
	countFlows(t, st)

	again, err := clickhouse.OpenStorage(ctx, clickhouse.StorageConfig{DataDir: dir, Existing: true}, nil)
	if err != nil {
		t.Fatalf("reader while the server runs: %v", err)
	}
	if again.Server != nil || again.DSN != st.DSN {
		t.Errorf("second open started its own server (%v) or another DSN (%q, want %q)", again.Server, again.DSN, st.DSN)
	}
	r, err := again.OpenReader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Exec(ctx, "CREATE TABLE reader_wrote (x UInt8) ENGINE = Memory"); err == nil {
		t.Error("the reader login created a table")
	}
	r.Close()
	again.Close()
	if err := st.Conn.Ping(ctx); err != nil {
		t.Errorf("closing the second store stopped the first one's server: %v", err)
	}
}
