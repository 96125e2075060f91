package clickhouse_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// TestQueryAsReaderAndSubSecondTimeout runs Query as the embedded server's
// read-only user and as the admin (with readonly=1 set per query): both
// read the tables, both keep a timeout under a second (it once became 0,
// no limit), and the reader is refused host files by the server itself
// (Query's own checks do not look at functions).
func TestQueryAsReaderAndSubSecondTimeout(t *testing.T) {
	conn, dsn := migrated(t, clickhouse.DefaultSchemaConfig())
	ctx := context.Background()
	native, _ := chtest.Server(t)
	db := dsn[strings.LastIndexByte(dsn, '/')+1:]
	reader, err := clickhouse.OpenReader(ctx, chtest.ReaderDSN(native, db))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for _, tc := range []struct {
		name string
		run  func(sql string, lim clickhouse.QueryLimits) (*clickhouse.Result, error)
	}{
		{"reader", func(sql string, lim clickhouse.QueryLimits) (*clickhouse.Result, error) {
			return clickhouse.Query(ctx, reader, sql, lim)
		}},
		{"admin", func(sql string, lim clickhouse.QueryLimits) (*clickhouse.Result, error) {
			return clickhouse.Query(ctx, conn, sql, lim)
		}},
	} {
		res, err := tc.run("SELECT count() FROM flows", clickhouse.DefaultQueryLimits())
		if err != nil || len(res.Rows) != 1 {
			t.Fatalf("%s: count flows: %v", tc.name, err)
		}
		lim := clickhouse.DefaultQueryLimits()
		lim.MaxExecutionTime = 300 * time.Millisecond
		t0 := time.Now()
		_, err = tc.run("SELECT sleepEachRow(0.1) FROM numbers(20)", lim)
		if err == nil || !strings.Contains(err.Error(), "imeout") {
			t.Errorf("%s: a 2 s query under a 300 ms limit: %v after %s", tc.name, err, time.Since(t0))
		}
		if _, err := tc.run("SELECT 1 SETTINGS readonly = 0", clickhouse.DefaultQueryLimits()); err == nil {
			t.Errorf("%s: readonly lifted inside the query", tc.name)
		}
	}
	if chtest.Embedded(t) == nil || embedded.LandlockABI() == 0 {
		t.Skip("host files are refused by the embedded server's Landlock confinement, not here")
	}
	// Past Query's own check (which refuses these by name first), the
	// server refuses them itself.
	for _, sql := range []string{"SELECT file('/etc/hostname')", "SELECT substring(file('/etc/shadow'), 1, 40)", "SELECT file('/proc/1/environ')"} {
		var out string
		if err := reader.QueryRow(ctx, sql).Scan(&out); err == nil {
			t.Errorf("%s answered %q", sql, out)
		} else if !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("%s: refused for another reason: %v", sql, err)
		}
	}
}

func TestCheckReadOnlyRefusesOutsideFunctions(t *testing.T) {
	for _, sql := range []string{
		"SELECT file('/etc/hostname')",
		"SELECT substring(FILE ('/etc/shadow'), 1, 60)",
		"SELECT `file`('/etc/hostname')",
		`SELECT "file"('/etc/hostname')`,
		"SELECT * FROM url('http://169.254.169.254/', 'LineAsString')",
		"WITH x AS (SELECT * FROM remote('10.0.0.1', system.one)) SELECT * FROM x",
		"SELECT * FROM s3('https://b/k', 'CSV')",
		"SELECT * FROM executable('id', 'LineAsString', 'l String')",
		"SELECT '--', file('/etc/hostname')",
		"SELECT 1 /* */, file /* x */ ('/etc/hostname')",
	} {
		if err := clickhouse.CheckReadOnly(sql); !errors.Is(err, clickhouse.ErrOutsideDatabase) {
			t.Errorf("%q: got %v, want ErrOutsideDatabase", sql, err)
		}
	}
	// The refusal names the function once (it once read "filefile()").
	if err := clickhouse.CheckReadOnly("SELECT file('/etc/shadow')"); err == nil || !strings.HasPrefix(err.Error(), "file(): ") {
		t.Errorf("refusal of file(): %v", err)
	}
	for _, sql := range []string{
		"SELECT 'file(/etc/hostname)' AS s",
		"SELECT count() AS file FROM flows",
		"SELECT http_path AS url, domain(http_path) FROM flows WHERE http_path LIKE '%remote(%'",
		"SELECT profile_name FROM flows",
	} {
		if err := clickhouse.CheckReadOnly(sql); err != nil {
			t.Errorf("%q refused: %v", sql, err)
		}
	}
}
