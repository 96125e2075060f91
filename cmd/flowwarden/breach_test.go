package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestBreachScenariosOverStoredHistory stores each breach scenario
// (testdata/scenarios/BREACH.md) in ClickHouse and runs detect --since over
// it with the scenarios' PeerAuthentications: the findings are the golden
// ones analyze's own test checks on the files, so the store keeps what the
// four breach detectors need (DNS names and answers, TCP flags, replies,
// mTLS, labels), and every finding's SQL runs and returns its subject's flows.
// storeFlows writes flows into a fresh migrated database and returns its
// DSN.
func storeFlows(t *testing.T, flows []schema.Flow) string {
	t.Helper()
	ctx := context.Background()
	dsn, _ := chtest.Database(t)
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := clickhouse.Migrate(ctx, conn, clickhouse.SchemaConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func TestBreachScenariosOverStoredHistory(t *testing.T) {
	for _, name := range []string{"breach-lookalikes", "dns-tunnel-fast", "dns-tunnel-slow-drip", "lateral-scan", "beacon-c2", "plaintext-in-mesh"} {
		t.Run(name, func(t *testing.T) {
			flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, name+".flows.jsonl.gz"))
			if err != nil {
				t.Fatal(err)
			}
			dsn := storeFlows(t, flows)
			out, err := run(t, "detect", "--clickhouse", dsn, "--since", scenarioStart.Add(-time.Hour).Format(time.RFC3339),
				"--until", scenarioStart.Add(3*time.Hour).Format(time.RFC3339), "--current-policies", filepath.Join(scenarioDir, "mesh"),
				"--format", "json", "--log-level", "warn")
			if err != nil {
				t.Fatalf("detect --since: %v\n%s", err, out)
			}
			_, got := goldenFindings(t, out)
			want, err := os.ReadFile(filepath.Join(scenarioDir, name+".golden.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("findings over the stored history differ from the file's\ngot:\n%s\nwant:\n%s", got, want)
			}
			sc := bufio.NewScanner(strings.NewReader(out))
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "detect: ") {
					continue // the summary on stderr (run merges the two)
				}
				var f schema.FindingRecord
				if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
					t.Fatal(err)
				}
				rows, err := run(t, "query", "--clickhouse", dsn, "--format", "json", "--log-level", "warn", f.Query)
				if err != nil {
					t.Fatalf("%s: query failed: %v\n%s", f.Detector, err, f.Query)
				}
				if n := strings.Count(rows, "\n"); n == 0 || !strings.Contains(rows, `"`+f.Workload+`"`) {
					t.Errorf("%s: the finding's query returned %d rows, none of %s\n%s", f.Detector, n, f.Workload, f.Query)
				}
			}
		})
	}
}
