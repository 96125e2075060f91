package clickhouse_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestTwoShardCluster lays the schema out on a real two-shard cluster (two
// embedded servers that know each other through remote_servers), writes the
// sample flows through the Distributed flows table, and finds them split
// across both shards with each workload on one shard, all back in one query
// from either server, the rollups complete, and findings deduplicated.
func TestTwoShardCluster(t *testing.T) {
	ctx := context.Background()
	shards := chtest.Cluster(t, "fw", 2)
	dsn := shards[0].DSN("fwcluster")
	cfg := clickhouse.SchemaConfig{Cluster: "fw", EachHost: true}

	conn0, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn0.Close()
	if err := clickhouse.MigrateEachHost(ctx, conn0, dsn, cfg, nil); err != nil {
		t.Fatal(err)
	}
	// Again: nothing changes.
	if err := clickhouse.MigrateEachHost(ctx, conn0, dsn, cfg, nil); err != nil {
		t.Fatalf("second migration: %v", err)
	}
	conn1, err := clickhouse.Open(ctx, shards[1].DSN("fwcluster"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn1.Close()
	for i, c := range []driver.Conn{conn0, conn1} {
		var engines string
		if err := c.QueryRow(ctx, `SELECT arrayStringConcat(groupArray(name || ':' || engine), ' ') FROM
			(SELECT name, engine FROM system.tables WHERE database = 'fwcluster' AND name IN ('flows', 'flows_local', 'findings', 'edges_5m') ORDER BY name)`).Scan(&engines); err != nil {
			t.Fatal(err)
		}
		if engines != "edges_5m:Distributed findings:Distributed flows:Distributed flows_local:MergeTree" {
			t.Errorf("shard %d tables: %s", i+1, engines)
		}
	}

	flows := sampleFlows(t)
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}

	count := func(c driver.Conn, sql string) uint64 {
		t.Helper()
		var n uint64
		if err := c.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	local0, local1 := count(conn0, "SELECT count() FROM flows_local"), count(conn1, "SELECT count() FROM flows_local")
	t.Logf("%d flows: %d on shard 1, %d on shard 2", len(flows), local0, local1)
	if local0 == 0 || local1 == 0 || local0+local1 != uint64(len(flows)) {
		t.Fatalf("flows split %d + %d, want both non-empty and %d in all", local0, local1, len(flows))
	}
	for i, c := range []driver.Conn{conn0, conn1} {
		if n := count(c, "SELECT count() FROM flows"); n != uint64(len(flows)) {
			t.Errorf("SELECT count() FROM flows on server %d: %d, want %d", i+1, n, len(flows))
		}
		if n := count(c, "SELECT sum(flows) FROM edges_5m"); n != uint64(len(flows)) {
			t.Errorf("edges_5m sums to %d flows on server %d, want %d", n, i+1, len(flows))
		}
		if n := count(c, "SELECT sum(flows) FROM edges_1d"); n != uint64(len(flows)) {
			t.Errorf("edges_1d sums to %d flows on server %d, want %d", n, i+1, len(flows))
		}
	}
	workloads := func(c driver.Conn) map[string]bool {
		rows, err := c.Query(ctx, "SELECT DISTINCT src_namespace || '/' || src_workload FROM flows_local WHERE src_workload != ''")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]bool{}
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			out[s] = true
		}
		return out
	}
	w0, w1 := workloads(conn0), workloads(conn1)
	for k := range w0 {
		if w1[k] {
			t.Errorf("workload %s has flows on both shards", k)
		}
	}
	if len(w0) == 0 || len(w1) == 0 {
		t.Errorf("workloads per shard: %d and %d", len(w0), len(w1))
	}

	// A retried insert (same deduplication token, as the spool retries)
	// through Distributed lands once on each shard.
	for i := 0; i < 3; i++ {
		err := conn0.Exec(ctx, `INSERT INTO flows (time, node, src_namespace, src_workload) SETTINGS insert_deduplication_token = 'retry-1',
			distributed_foreground_insert = 1 VALUES ('2026-11-26 00:00:00', 'dedup', 'a', 'one'), ('2026-11-26 00:00:00', 'dedup', 'b', 'two'),
			('2026-11-26 00:00:00', 'dedup', 'c', 'three'), ('2026-11-26 00:00:00', 'dedup', 'd', 'four')`)
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := count(conn1, "SELECT count() FROM flows WHERE node = 'dedup'"); n != 4 {
		t.Errorf("a batch inserted 3 times with one token through Distributed: %d rows, want 4", n)
	}
	if count(conn0, "SELECT count() FROM flows_local WHERE node = 'dedup'") == 0 || count(conn1, "SELECT count() FROM flows_local WHERE node = 'dedup'") == 0 {
		t.Log("the retried batch landed on one shard only; the deduplication check covers that shard alone")
	}

	// The newest flow, for serve's resume, comes back through Distributed.
	last, err := clickhouse.LastFlowTime(ctx, conn1, "hubble")
	if err != nil {
		t.Fatal(err)
	}
	var newest time.Time
	for _, f := range flows {
		if f.Time.After(newest) {
			newest = f.Time
		}
	}
	if !last.Equal(newest) {
		t.Errorf("LastFlowTime %s, want %s", last, newest)
	}

	// Findings: two versions of one finding through Distributed, one after FINAL.
	store := clickhouse.NewFindingStore(conn0, nil, nil)
	f := schema.Finding{ID: "abc", Detector: "metadata-access", Severity: schema.SeverityCritical, Namespace: "default", Workload: "x",
		Start: newest, End: newest, Status: schema.FindingOpen}
	store.Finding(f)
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.Status = schema.FindingResolved
	store.Finding(f)
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := conn1.QueryRow(ctx, "SELECT status FROM findings FINAL WHERE id = 'abc'").Scan(&status); err != nil || status != "resolved" {
		t.Errorf("findings FINAL through Distributed: %q, %v", status, err)
	}
	if n := count(conn1, "SELECT count() FROM findings FINAL"); n != 1 {
		t.Errorf("%d findings after FINAL, want 1", n)
	}
}

func sampleFlows(tb testing.TB) []schema.Flow {
	tb.Helper()
	paths, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	flows, err := hubble.ReadFlows(context.Background(), paths...)
	if err != nil {
		tb.Fatal(err)
	}
	return flows
}

// repeatedSamples is rows flows for benchmarks: the samples over and over,
// each a microsecond after the one before.
func repeatedSamples(tb testing.TB, rows int) []schema.Flow {
	sample := sampleFlows(tb)
	flows := make([]schema.Flow, rows)
	for i := range flows {
		flows[i] = sample[i%len(sample)]
		flows[i].Time = flows[i].Time.Add(time.Duration(i) * time.Microsecond)
	}
	return flows
}

// TestReplicatedClusterDDL renders the production layout (ON CLUSTER,
// Replicated*MergeTree with the {shard}/{replica} macros, Distributed on top)
// and has ClickHouse's own parser check every statement; the embedded servers
// have no Keeper, so it is parsed, not run.
func TestReplicatedClusterDDL(t *testing.T) {
	_, httpAddr := chtest.Server(t)
	migs, err := clickhouse.Migrations(clickhouse.SchemaConfig{Cluster: "prod", Replicated: true, FlowsTTL: 90 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, m := range migs {
		for _, stmt := range m.Statements {
			all = append(all, stmt)
			if err := chtest.Exec(httpAddr, "EXPLAIN AST "+stmt); err != nil {
				t.Errorf("ClickHouse does not parse:\n%s\n%v", stmt, err)
			}
		}
	}
	text := strings.Join(all, "\n;\n")
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS flows_local ON CLUSTER `prod`",
		`ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/flows_local', '{replica}')`,
		`ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/findings_local', '{replica}', updated_at)`,
		`ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/edges_1d_local', '{replica}')`,
		"CREATE TABLE IF NOT EXISTS flows ON CLUSTER `prod` AS flows_local\n" + `ENGINE = Distributed('prod', currentDatabase(), flows_local, cityHash64(src_namespace, if(src_workload = '', IPv6NumToString(src_ip), src_workload)))`,
		"CREATE MATERIALIZED VIEW IF NOT EXISTS edges_5m_mv ON CLUSTER `prod` TO edges_5m_local",
		`FROM flows_local AS f`,
		`ENGINE = Distributed('prod', currentDatabase(), findings_local, cityHash64(id))`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the replicated layout lacks %q", want)
		}
	}
	// The single-server layout is untouched by the cluster helpers.
	single, _ := clickhouse.Migrations(clickhouse.SchemaConfig{})
	for _, m := range single {
		for _, stmt := range m.Statements {
			if strings.Contains(stmt, "_local") || strings.Contains(stmt, "ON CLUSTER") || strings.Contains(stmt, "Distributed") {
				t.Errorf("single-server DDL mentions the cluster layout:\n%s", stmt)
			}
		}
	}
}

// BenchmarkDistributedInsert writes the same 100,000 flows (the samples
// with their workloads spread over 200 namespaces) through the writer into
// a single server and into the Distributed table of a two-shard cluster on
// the same machine, alternately, and reports the cluster's rate as a ratio.
func BenchmarkDistributedInsert(b *testing.B) {
	ctx := context.Background()
	const rows = 100000
	flows := repeatedSamples(b, rows)
	for i := range flows {
		flows[i].Src.Namespace = fmt.Sprintf("ns-%d", i%200)
	}
	single, _ := chtest.Database(b)
	shards := chtest.Cluster(b, "fw", 2)
	cluster := shards[0].DSN("fwbench")
	for _, target := range []struct {
		dsn string
		cfg clickhouse.SchemaConfig
	}{{single, clickhouse.SchemaConfig{}}, {cluster, clickhouse.SchemaConfig{Cluster: "fw", EachHost: true}}} {
		conn, err := clickhouse.Open(ctx, target.dsn)
		if err != nil {
			b.Fatal(err)
		}
		if target.cfg.EachHost {
			err = clickhouse.MigrateEachHost(ctx, conn, target.dsn, target.cfg, nil)
		} else {
			err = clickhouse.Migrate(ctx, conn, target.cfg, nil)
		}
		conn.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	write := func(dsn string) time.Duration {
		t0 := time.Now()
		w, err := clickhouse.NewWriter(clickhouse.WriterConfig{BatchSize: 50000}, dsn, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		if err := w.Write(ctx, flows...); err != nil {
			b.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	var one, two time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one += write(single)
		two += write(cluster)
	}
	b.ReportMetric(float64(b.N*rows)/one.Seconds(), "single-flows/s")
	b.ReportMetric(float64(b.N*rows)/two.Seconds(), "2shard-flows/s")
	b.ReportMetric(one.Seconds()/two.Seconds(), "cluster/single")
}
