package clickhouse_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// migrated gives the test a database of its own with the schema in it.
func migrated(tb testing.TB, cfg clickhouse.SchemaConfig) (driver.Conn, string) {
	tb.Helper()
	dsn, _ := chtest.Database(tb)
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	if err := clickhouse.Migrate(context.Background(), conn, cfg, nil); err != nil {
		tb.Fatal(err)
	}
	return conn, dsn
}

func TestMigrateIsIdempotent(t *testing.T) {
	conn, _ := migrated(t, clickhouse.DefaultSchemaConfig())
	ctx := context.Background()
	schemaText := func() string {
		rows, err := conn.Query(ctx, "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var n, q string
			if err := rows.Scan(&n, &q); err != nil {
				t.Fatal(err)
			}
			b.WriteString(n + ": " + q + "\n")
		}
		return b.String()
	}
	before := schemaText()
	for _, want := range []string{"flows:", "edges_5m:", "edges_1d:", "edges_5m_mv:", "edges_1d_mv:", "schema_migrations:", "TTL", "IPv6", "DateTime64(9"} {
		if !strings.Contains(before, want) {
			t.Errorf("schema lacks %q", want)
		}
	}
	if err := clickhouse.Migrate(ctx, conn, clickhouse.DefaultSchemaConfig(), nil); err != nil {
		t.Fatal(err)
	}
	if after := schemaText(); after != before {
		t.Fatalf("second migration changed the schema:\n%s\n---\n%s", before, after)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	migs, _ := clickhouse.Migrations(clickhouse.DefaultSchemaConfig())
	if n != uint64(len(migs)) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(migs))
	}
}

func TestQueryIsReadOnly(t *testing.T) {
	conn, _ := migrated(t, clickhouse.DefaultSchemaConfig())
	ctx := context.Background()
	for _, sql := range []string{
		"INSERT INTO flows (node) VALUES ('x')",
		"DROP TABLE flows",
		"  /* sneaky */ ALTER TABLE flows DELETE WHERE 1",
		"SELECT 1; DROP TABLE flows",
		"KILL QUERY WHERE 1",
		"SYSTEM STOP MERGES",
		"CREATE TABLE x (a UInt8) ENGINE = Memory",
		"OPTIMIZE TABLE flows",
	} {
		if _, err := clickhouse.Query(ctx, conn, sql, clickhouse.DefaultQueryLimits()); !errors.Is(err, clickhouse.ErrNotReadOnly) {
			t.Errorf("%q: got %v, want ErrNotReadOnly", sql, err)
		}
	}
	// A write hidden in a read-only-looking statement is refused by the server.
	if _, err := clickhouse.Query(ctx, conn, "SELECT * FROM system.numbers LIMIT 1 SETTINGS readonly=0", clickhouse.DefaultQueryLimits()); err == nil {
		t.Error("changing readonly inside the query was allowed")
	}
	res, err := clickhouse.Query(ctx, conn, "-- count\nSELECT count() AS n, 'a;b' AS s FROM flows", clickhouse.DefaultQueryLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Columns[0] != "n" {
		t.Fatalf("unexpected result %+v", res)
	}
	lim := clickhouse.DefaultQueryLimits()
	lim.MaxResultRows = 10
	if _, err := clickhouse.Query(ctx, conn, "SELECT number FROM system.numbers LIMIT 1000", lim); err == nil {
		t.Error("result row limit not enforced")
	}
}

func TestRedactDSN(t *testing.T) {
	for _, dsn := range []string{
		"clickhouse://user:hunter2@host:9000/db",
		"clickhouse://user:hunter2@host:9000/db?password=hunter2&dial_timeout=1s",
		"clickhouse://host:9000/db?secret=hunter2",
	} {
		if got := clickhouse.RedactDSN(dsn); strings.Contains(got, "hunter2") || !strings.Contains(got, "host:9000") {
			t.Errorf("RedactDSN(%q) = %q", dsn, got)
		}
	}
}
