package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// sampleFlowCount is the number of flows in testdata/hubble/*.json.
const sampleFlowCount = 1916

func queryOne(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, append([]string{"query", "--log-level", "warn", "--format", "csv"}, args...)...)
	if err != nil {
		t.Fatalf("query %v: %v\n%s", args, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestIngestGlobIntoFreshDataDir is the README's first contact: the shell
// glob of the published samples as arguments into a new data dir; every
// flow is stored and stays (the samples are from 2021, far older than the
// default 90-day retention, which counts from when they were stored).
func TestIngestGlobIntoFreshDataDir(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/*.json")
	dir := filepath.Join(t.TempDir(), "data")
	out, err := run(t, append([]string{"ingest", "--data-dir", dir, "--log-level", "warn"}, files...)...)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	if !strings.Contains(out, "total: 1916 flows written, 0 lines rejected") {
		t.Fatalf("ingest summary:\n%s", out)
	}
	if got := queryOne(t, "--data-dir", dir, "SELECT count() FROM flows"); got != "1916" {
		t.Fatalf("count() = %s, want %d", got, sampleFlowCount)
	}
}

// TestIngestSeveralFilesAfterOneFlag: --hubble-file a b c (the rest are
// arguments, told by content) and Envoy logs as arguments; the TTL merge
// keeps every row; written equals count().
func TestIngestSeveralFilesAfterOneFlag(t *testing.T) {
	ctx := context.Background()
	dsn, _ := chtest.Database(t)
	hubbleFiles, _ := filepath.Glob("../../testdata/hubble/*.json")
	envoyFiles, _ := filepath.Glob("../../testdata/istio-envoy/*.log")
	args := append([]string{"ingest", "--clickhouse", dsn, "--log-level", "warn", "--hubble-file"}, hubbleFiles...)
	out, err := run(t, append(args, envoyFiles...)...)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	const envoyLines = 5
	if !strings.Contains(out, "total: 1921 flows written, 0 lines rejected") || strings.Count(out, "(Envoy access log)") != len(envoyFiles) {
		t.Fatalf("ingest summary:\n%s", out)
	}
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "OPTIMIZE TABLE flows FINAL"); err != nil {
		t.Fatal(err)
	}
	if got := queryOne(t, "--clickhouse", dsn, "SELECT countIf(source = 'hubble') || ' ' || countIf(source = 'envoy') FROM flows"); got != "1916 5" {
		t.Fatalf("after the TTL merge: hubble, envoy flows = %s, want 1916 %d", got, envoyLines)
	}
	// query --format json keeps the columns' order.
	out, err = run(t, "query", "--clickhouse", dsn, "--format", "json", "SELECT 'x' AS zeta, count() AS alpha FROM flows")
	if err != nil || out != "{\"zeta\":\"x\",\"alpha\":1921}\n" {
		t.Fatalf("query --format json: %v %q", err, out)
	}
}

// TestFlowsTTLChangesExistingTables: --flows-ttl given on an existing
// database changes its TTL and says so; not given, it is kept.
func TestFlowsTTLChangesExistingTables(t *testing.T) {
	dsn, _ := chtest.Database(t)
	file := "../../testdata/hubble/basic-sample-10-flows.json"
	ttl := func() string {
		return queryOne(t, "--clickhouse", dsn, "SELECT extract(engine_full, 'TTL (.*) SETTINGS') FROM system.tables WHERE database = currentDatabase() AND name = 'flows'")
	}
	if out, err := run(t, "ingest", "--clickhouse", dsn, file); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	if got := ttl(); got != "stored_at + toIntervalDay(90)" {
		t.Fatalf("default TTL %q", got)
	}
	out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "720h", file)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	if !strings.Contains(out, "retention changed") || !strings.Contains(out, "--flows-ttl") {
		t.Errorf("the TTL change was not logged:\n%s", out)
	}
	if got := ttl(); got != "stored_at + toIntervalDay(30)" {
		t.Fatalf("after --flows-ttl 720h the TTL is %q", got)
	}
	if out, err := run(t, "ingest", "--clickhouse", dsn, file); err != nil || strings.Contains(out, "retention changed") {
		t.Fatalf("ingest without --flows-ttl: %v\n%s", err, out)
	}
	if got := ttl(); got != "stored_at + toIntervalDay(30)" {
		t.Fatalf("an ingest without --flows-ttl changed the TTL to %q", got)
	}
	if got := queryOne(t, "--clickhouse", dsn, "SELECT count() FROM flows"); got != "30" {
		t.Fatalf("count() = %s after three imports of 10 flows", got)
	}
}

// TestReadersRefuseMissingDatabase: query and the --since readers name the
// data dir that holds no database, and create nothing there.
func TestReadersRefuseMissingDatabase(t *testing.T) {
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "nowhere")
	for _, args := range [][]string{
		{"query", "--data-dir", empty, "SELECT 1"},
		{"query", "--data-dir", missing, "SELECT 1"},
		{"detect", "--data-dir", empty, "--since", "1h"},
		{"recommend", "--data-dir", empty, "--since", "1h", "--out", filepath.Join(t.TempDir(), "p")},
		{"report", "--data-dir", empty, "--since", "1h", "--out", filepath.Join(t.TempDir(), "r")},
	} {
		dir := args[2]
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "no flowwarden database") {
			t.Errorf("%v: got %v, want a refusal naming %s", args, err, dir)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("a reader created %d entries in the empty data dir", len(entries))
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a reader created the missing data dir")
	}
	// A server without the database: refused, and not created.
	dsn, db := chtest.Database(t)
	if _, err := run(t, "query", "--clickhouse", dsn, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "--clickhouse") {
		t.Errorf("query on a server without the database: got %v", err)
	}
	other, _ := chtest.Database(t)
	conn, err := clickhouse.Open(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM system.databases WHERE name = ?", db).Scan(&n); err != nil || n != 0 {
		t.Errorf("query created the database (%d, %v)", n, err)
	}
}

// TestFilesCheckedBeforeAnythingStarts: a file that cannot be read, or
// whose kind cannot be told, is reported with the flag that named it before
// ClickHouse starts; a file that yields no flow fails ingest.
func TestFilesCheckedBeforeAnythingStarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, err := run(t, "ingest", "--data-dir", dir, "--hubble-file", "/nonexistent.json", "../../README.md")
	if err == nil || !strings.Contains(err.Error(), "--hubble-file /nonexistent.json") || !strings.Contains(err.Error(), "README.md: neither Hubble JSON nor an Envoy access log") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("ClickHouse was started before the files were checked")
	}
	for _, args := range [][]string{
		{"detect"},
		{"recommend", "--out", t.TempDir()},
		{"verify", "--policies", t.TempDir()},
		{"report", "--out", t.TempDir()},
	} {
		// verify prints its error and exits 2 (a CI gate's "could not check").
		if out, err := run(t, append(args, "--data-dir", dir, "/nonexistent.json")...); err == nil || !strings.Contains(err.Error()+out, "file /nonexistent.json") {
			t.Errorf("%s: got %v\n%s", args[0], err, out)
		}
	}
	if out, err := run(t, "verify", "--policies", "/nonexistent", "../../testdata/hubble/basic-sample-10-flows.json"); err == nil || !strings.Contains(out, "verify: --policies: ") {
		t.Errorf("verify --policies /nonexistent: got %v, want the flag named:\n%s", err, out)
	}
	dsn, _ := chtest.Database(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte("{\"flow\": 7}\n{\"flow\": \"x\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "ingest", "--clickhouse", dsn, "--log-level", "warn", bad)
	if err == nil || !strings.Contains(err.Error(), "no flow in "+bad) {
		t.Fatalf("ingest of a file without flows: got %v\n%s", err, out)
	}
}

// TestDetectSummary: detect says what it read even when nothing was found.
func TestDetectSummary(t *testing.T) {
	out, err := run(t, "detect", "--log-level", "warn", "../../testdata/hubble/basic-sample-10-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "detect: 10 flows read, 0 findings\n") {
		t.Fatalf("no summary:\n%s", out)
	}
	out, err = run(t, "detect", "--log-level", "warn", "../../testdata/scenarios/metadata-probe.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "critical)") || !strings.Contains(out, "metadata-access") {
		t.Fatalf("summary of the metadata probe:\n%s", out)
	}
}

// TestFileFlagsHelp: the file flags read as FILE in --help (a backticked
// phrase in a flag's usage becomes its type name).
func TestFileFlagsHelp(t *testing.T) {
	for _, cmd := range []string{"ingest", "detect", "recommend", "verify", "report"} {
		out, err := run(t, cmd, "--help")
		if err != nil || !strings.Contains(out, "--hubble-file FILE ") || !strings.Contains(out, "--envoy-file FILE ") || strings.Contains(out, "--hubble-file hubble") {
			t.Errorf("%s --help (%v):\n%s", cmd, err, out)
		}
	}
}
