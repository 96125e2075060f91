package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestFindingQueriesReturnTheirFlows stores each incident scenario in
// ClickHouse, runs the detectors, and runs every finding's SQL through
// `flowwarden query`: it must return exactly the flows the finding counted.
func TestFindingQueriesReturnTheirFlows(t *testing.T) {
	for _, name := range []string{"metadata-probe", "sudden-exfiltration", "slow-exfiltration", "cross-namespace-scan", "misconfigured-namespace"} {
		t.Run(name, func(t *testing.T) {
			dsn, _ := chtest.Database(t)
			file := filepath.Join(scenarioDir, name+".jsonl.gz")
			if out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--hubble-file", file, "--log-level", "warn"); err != nil {
				t.Fatalf("ingest: %v\n%s", err, out)
			}
			// Detect with the findings stored, as serve does.
			ctx := context.Background()
			conn, err := clickhouse.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			store := clickhouse.NewFindingStore(conn, nil, nil)
			var found analyze.Collector
			eng, err := analyze.NewEngine(analyze.DefaultConfig(), analyze.Fanout{&found, store}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := hubble.ReadFile(ctx, file, 1, eng, &ingest.Stats{}); err != nil {
				t.Fatal(err)
			}
			eng.Flush()
			if err := store.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			findings := found.Findings()
			if len(findings) == 0 {
				t.Fatal("no findings")
			}
			for i := range findings {
				clickhouse.RenderQuery(&findings[i]) // as serve's sinks get them
			}
			var stored uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM findings FINAL").Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if stored != uint64(len(findings)) {
				t.Errorf("findings table holds %d findings, the detectors reported %d", stored, len(findings))
			}
			for _, f := range findings {
				out, err := run(t, "query", "--clickhouse", dsn, "--format", "json", "--log-level", "warn", f.Query)
				if err != nil {
					t.Fatalf("%s: query failed: %v\n%s", f.Detector, err, f.Query)
				}
				rows := strings.Count(out, "\n")
				if uint64(rows) != f.Evidence.Flows {
					t.Errorf("%s %s/%s: query returned %d flows, finding counted %d\n%s", f.Detector, f.Namespace, f.Workload, rows, f.Evidence.Flows, f.Query)
				}
				if rows > 0 {
					var first map[string]any
					if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil {
						t.Fatal(err)
					}
					if first["src_namespace"] != f.Namespace {
						t.Errorf("%s: first flow is from %v, want namespace %s", f.Detector, first["src_namespace"], f.Namespace)
					}
				}
			}
		})
	}
}
