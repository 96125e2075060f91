package hubble

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// openStore gives a test a migrated database and a running writer.
func openStore(t *testing.T, cfg clickhouse.WriterConfig) (driver.Conn, *clickhouse.Writer, func()) {
	t.Helper()
	dsn, _ := chtest.Database(t)
	ctx := context.Background()
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := clickhouse.Migrate(ctx, conn, clickhouse.SchemaConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	w, err := clickhouse.NewWriter(cfg, dsn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	}
	return conn, w, stop
}

// countVerdictsIndependently counts flows per verdict with encoding/json,
// without any of the ingest code.
func countVerdictsIndependently(t *testing.T, files []string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			var v struct {
				Flow struct {
					Verdict string `json:"verdict"`
				} `json:"flow"`
			}
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out[v.Flow.Verdict]++
		}
	}
	return out
}

func verdictCounts(t *testing.T, conn driver.Conn) map[string]uint64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT verdict, count() FROM flows GROUP BY verdict")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]uint64{}
	for rows.Next() {
		var v string
		var n uint64
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		got[v] = n
	}
	return got
}

func TestSamplesIntoClickHouse(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	if len(files) != 9 {
		t.Fatalf("want the 9 hubble-otel samples, found %d", len(files))
	}
	conn, w, stop := openStore(t, clickhouse.WriterConfig{BatchSize: 500, FlushInterval: 100 * time.Millisecond})
	var stats ingest.Stats
	for _, f := range files {
		if err := ReadFile(context.Background(), f, 1, w, &stats); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	snap := stats.Snapshot()
	if snap.Read != 1916 || snap.Accepted != 1916 || snap.RejectedTotal() != 0 {
		t.Fatalf("want 1916 read and accepted, 0 rejected; got %s", snap)
	}
	want := countVerdictsIndependently(t, files)
	got := verdictCounts(t, conn)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdict counts: ClickHouse %v, files %v", got, want)
	}
	// The rollups see the same flows.
	var edges uint64
	if err := conn.QueryRow(context.Background(), "SELECT sum(flows) FROM edges_5m").Scan(&edges); err != nil {
		t.Fatal(err)
	}
	if edges != 1916 {
		t.Fatalf("edges_5m sums %d flows, want 1916", edges)
	}
}

func TestMalformedLinesCountedGoodLinesLand(t *testing.T) {
	lines := sampleLines(t)["basic-sample-10-flows.json"]
	var input strings.Builder
	bad := []string{
		string(lines[0][:len(lines[0])/2]),                                          // truncated
		`{"flow":{"time":"2021-06-16T16:52:13Z","l4":{"TCP":{"source_port":"x"}}}}`, // wrong type
		"\x00\x01\xfe\xff binary junk",
		"{\"flow\":{\"time\":\"2021-06-16T16:52:13Z\",\"node_name\":\"\xff\"}}",
		strings.Repeat("x", MaxLineBytes+10),
	}
	for i, l := range lines {
		input.Write(l)
		input.WriteByte('\n')
		if i < len(bad) {
			input.WriteString(bad[i])
			input.WriteByte('\n')
		}
	}
	conn, w, stop := openStore(t, clickhouse.WriterConfig{BatchSize: 3, FlushInterval: 50 * time.Millisecond})
	var stats ingest.Stats
	if err := ReadLines(context.Background(), strings.NewReader(input.String()), "mixed", w, &stats); err != nil {
		t.Fatal(err)
	}
	stop()
	snap := stats.Snapshot()
	if snap.Accepted != int64(len(lines)) || snap.RejectedTotal() != int64(len(bad)) {
		t.Fatalf("want %d accepted and %d rejected: %s", len(lines), len(bad), snap)
	}
	for _, reason := range []string{"truncated JSON", "wrong field type or value", "malformed JSON", "invalid UTF-8", "line too long"} {
		if snap.Rejected[reason] != 1 {
			t.Errorf("reason %q counted %d times, want 1: %s", reason, snap.Rejected[reason], snap)
		}
	}
	for _, e := range snap.Examples {
		if !strings.HasPrefix(e, "mixed:") {
			t.Errorf("example without its line: %q", e)
		}
	}
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM flows").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(lines)) {
		t.Fatalf("%d rows in ClickHouse, want %d", n, len(lines))
	}
}
