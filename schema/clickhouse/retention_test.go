package clickhouse_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func count(t *testing.T, conn driver.Conn, sql string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func exec(t *testing.T, conn driver.Conn, sql string) {
	t.Helper()
	if err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func tableTTL(t *testing.T, conn driver.Conn, table string) string {
	t.Helper()
	ttl, err := clickhouse.TableTTL(context.Background(), conn, table)
	if err != nil {
		t.Fatal(err)
	}
	return ttl
}

// TestOldRecordingOutlivesTheTTL stores the published samples (2021, years
// older than the default 90-day retention) and forces ClickHouse's TTL
// merges: every row stays, in flows and in the rollups, because retention
// counts from when a row was stored.
func TestOldRecordingOutlivesTheTTL(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migrated(t, clickhouse.DefaultSchemaConfig())
	flows := sampleFlows(t)
	if flows[0].Time.After(time.Now().Add(-365 * 24 * time.Hour)) {
		t.Fatalf("the samples are from %s: the test needs a recording older than the TTL", flows[0].Time)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"flows", "edges_5m", "edges_1d"} {
		exec(t, conn, "OPTIMIZE TABLE "+table+" FINAL")
	}
	if n := count(t, conn, "SELECT count() FROM flows"); n != uint64(len(flows)) {
		t.Fatalf("after the TTL merge flows holds %d rows, want the %d stored", n, len(flows))
	}
	for _, table := range []string{"edges_5m", "edges_1d"} {
		if n := count(t, conn, "SELECT sum(flows) FROM "+table); n != uint64(len(flows)) {
			t.Errorf("after the TTL merge %s counts %d flows, want %d", table, n, len(flows))
		}
	}
	if n := count(t, conn, "SELECT count() FROM flows WHERE stored_at < now() - INTERVAL 1 HOUR OR stored_at > now() + INTERVAL 1 MINUTE"); n != 0 {
		t.Errorf("%d rows have a stored_at that is not the time they were stored", n)
	}
	if got, want := tableTTL(t, conn, "flows"), "stored_at + toIntervalDay(90)"; got != want {
		t.Errorf("flows TTL %q, want %q", got, want)
	}
	if got, want := tableTTL(t, conn, "edges_5m"), "stored_at + toIntervalDay(400)"; got != want {
		t.Errorf("edges_5m TTL %q, want %q", got, want)
	}
	// Expiry itself still works, counted from stored_at.
	exec(t, conn, "ALTER TABLE flows MODIFY TTL stored_at + INTERVAL 1 SECOND SETTINGS mutations_sync = 1")
	time.Sleep(2 * time.Second)
	exec(t, conn, "OPTIMIZE TABLE flows FINAL")
	if n := count(t, conn, "SELECT count() FROM flows"); n != 0 {
		t.Errorf("%d rows outlived a 1-second TTL on stored_at", n)
	}
}

// TestMigrationKeepsExistingRows builds a database as the migrations before
// stored_at left it, stores flows in it, and migrates: no row is lost, and
// every one counts as stored at the migration.
func TestMigrationKeepsExistingRows(t *testing.T) {
	ctx := context.Background()
	dsn, _ := chtest.Database(t)
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := clickhouse.DefaultSchemaConfig()
	migs, err := clickhouse.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `CREATE TABLE schema_migrations (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version`)
	for _, m := range migs {
		if m.Version >= 4 {
			break
		}
		for _, stmt := range m.Statements {
			exec(t, conn, stmt)
		}
		if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)", uint32(m.Version), m.Name, m.Checksum); err != nil {
			t.Fatal(err)
		}
	}
	// Flows of the last days: the old event-time TTL keeps them.
	flows := sampleFlows(t)
	shift := time.Since(flows[0].Time) - 48*time.Hour
	for i := range flows {
		flows[i].Time = flows[i].Time.Add(shift)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	if got := tableTTL(t, conn, "flows"); got != "toDateTime(time) + toIntervalDay(90)" {
		t.Fatalf("the old schema's TTL is %q", got)
	}
	if err := clickhouse.Migrate(ctx, conn, cfg, nil); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, "OPTIMIZE TABLE flows FINAL")
	if n := count(t, conn, "SELECT count() FROM flows"); n != uint64(len(flows)) {
		t.Fatalf("after migrating flows holds %d rows, want %d", n, len(flows))
	}
	if got := tableTTL(t, conn, "flows"); got != "stored_at + toIntervalDay(90)" {
		t.Errorf("migrated flows TTL %q", got)
	}
	if n := count(t, conn, "SELECT count() FROM flows WHERE stored_at < now() - INTERVAL 1 HOUR"); n != 0 {
		t.Errorf("%d migrated rows count as stored before the migration", n)
	}
}

// TestChangingTheTTLChangesTheTables migrates again with other retentions:
// the tables' TTLs follow, each change is logged, and a migration that was
// not given retentions leaves them alone.
func TestChangingTheTTLChangesTheTables(t *testing.T) {
	ctx := context.Background()
	conn, _ := migrated(t, clickhouse.DefaultSchemaConfig())
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := clickhouse.SchemaConfig{FlowsTTL: 0, RollupTTL: 30 * 24 * time.Hour, ApplyFlowsTTL: true, ApplyRollupTTL: true}
	if err := clickhouse.Migrate(ctx, conn, cfg, log); err != nil {
		t.Fatal(err)
	}
	for table, want := range map[string]string{
		"flows": "", "nft_counters": "",
		"edges_5m": "stored_at + toIntervalDay(30)", "edges_1d": "stored_at + toIntervalDay(30)",
		"findings": "toDateTime(updated_at) + toIntervalDay(30)",
	} {
		if got := tableTTL(t, conn, table); got != want {
			t.Errorf("%s TTL %q, want %q", table, got, want)
		}
	}
	if n := strings.Count(logs.String(), "retention changed"); n != 5 {
		t.Errorf("%d retention changes logged, want 5:\n%s", n, logs.String())
	}
	// Not given: kept.
	logs.Reset()
	if err := clickhouse.Migrate(ctx, conn, clickhouse.DefaultSchemaConfig(), log); err != nil {
		t.Fatal(err)
	}
	if got := tableTTL(t, conn, "flows"); got != "" || strings.Contains(logs.String(), "retention changed") {
		t.Errorf("a migration without retentions changed them: flows TTL %q\n%s", got, logs.String())
	}
	// Given again, the same: nothing to do. A TTL under a day is kept in hours.
	if err := clickhouse.Migrate(ctx, conn, cfg, log); err != nil || strings.Contains(logs.String(), "retention changed") {
		t.Errorf("an unchanged retention was applied again (%v):\n%s", err, logs.String())
	}
	if err := clickhouse.Migrate(ctx, conn, clickhouse.SchemaConfig{FlowsTTL: 36 * time.Hour, ApplyFlowsTTL: true}, log); err != nil {
		t.Fatal(err)
	}
	if got := tableTTL(t, conn, "flows"); got != "stored_at + toIntervalHour(36)" {
		t.Errorf("flows TTL %q, want 36 hours", got)
	}
}
