package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestIngestIntoTwoShardCluster runs the CLI against a two-shard cluster:
// the samples ingested through either server are split across both shards,
// and the README's forensic query shape answers from the whole cluster.
func TestIngestIntoTwoShardCluster(t *testing.T) {
	shards := chtest.Cluster(t, "flowwarden", 2)
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	cluster := []string{"--clickhouse-cluster", "flowwarden", "--clickhouse-replicated=false", "--clickhouse-cluster-ddl", "each-host", "--flows-ttl", "0", "--log-level", "warn"}
	dsn := func(i int) string { return shards[i].DSN("flowwarden") }

	args := append([]string{"ingest", "--clickhouse", dsn(1)}, cluster...)
	for _, f := range files {
		args = append(args, "--hubble-file", f)
	}
	if out, err := run(t, args...); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	out, err := run(t, append([]string{"query", "--clickhouse", dsn(0), "--format", "csv",
		"SELECT verdict, count() FROM flows GROUP BY verdict ORDER BY verdict"}, cluster...)...)
	if err != nil {
		t.Fatalf("query: %v\n%s", err, out)
	}
	if !strings.Contains(out, "FORWARDED,1459\nREDIRECTED,457") {
		t.Errorf("query over the cluster: %s", out)
	}
	var total, perShard uint64
	for i := range shards {
		conn, err := clickhouse.Open(context.Background(), dsn(i))
		if err != nil {
			t.Fatal(err)
		}
		var local, all uint64
		if err := conn.QueryRow(context.Background(), "SELECT (SELECT count() FROM flows_local), (SELECT count() FROM flows)").Scan(&local, &all); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if local == 0 {
			t.Errorf("shard %d holds no flows", i+1)
		}
		perShard += local
		total = all
	}
	if total != 1916 || perShard != total {
		t.Errorf("%d flows through Distributed, %d summed over the shards; want 1916 both", total, perShard)
	}

	// Clear errors for a cluster that is not there, or no server to hold one.
	if out, err := run(t, append([]string{"query", "--clickhouse", dsn(0), "SELECT 1"}, append(cluster[:0:0], "--clickhouse-cluster", "nope", "--clickhouse-cluster-ddl", "each-host")...)...); err == nil ||
		!strings.Contains(err.Error(), `cluster "nope" is not defined`) {
		t.Errorf("unknown cluster: %v %s", err, out)
	}
	if _, err := run(t, "query", "--clickhouse-cluster", "flowwarden", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "needs --clickhouse") {
		t.Errorf("cluster without --clickhouse: %v", err)
	}
}
