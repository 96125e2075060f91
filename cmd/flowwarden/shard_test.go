package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// shardScenarios are the incident scenarios the sharded replicas replay
// together: one stream holding a metadata probe, a cross-namespace scan, a
// misconfigured namespace and a sudden exfiltration over the same hour.
var shardScenarios = []string{"metadata-probe", "cross-namespace-scan", "misconfigured-namespace", "sudden-exfiltration"}

// shardReplay serves the scenarios, then one flow two hours later in each
// shard's share (one opened from the world, one from bookinfo), so that
// every replica's detectors close every window of the hour on flow time.
func shardReplay(t *testing.T, rate float64) *hubble.Replay {
	t.Helper()
	var files []string
	for _, sc := range shardScenarios {
		files = append(files, filepath.Join(scenarioDir, sc+".jsonl.gz"))
	}
	const late = `{"flow":{"time":"%[1]s","verdict":"FORWARDED","IP":{"source":"%[2]s","destination":"%[3]s","ipVersion":"IPv4"},` +
		`"l4":{"TCP":{"source_port":40000,"destination_port":9080,"flags":{"SYN":true}}},` +
		`"source":%[4]s,"destination":{"identity":3418,"namespace":"bookinfo","pod_name":"productpage-v1-6b746f74dc-9rcxx","labels":["k8s:app=productpage"]},` +
		`"node_name":"kind-control-plane","event_type":{"type":4},"traffic_direction":"INGRESS","is_reply":false},"node_name":"kind-control-plane","time":"%[1]s"}` + "\n"
	at := scenarioStart.Add(3 * time.Hour)
	tail := fmt.Sprintf(late, at.Format(time.RFC3339Nano), "203.0.113.7", "10.244.0.177", `{"identity":2,"labels":["reserved:world"]}`) +
		fmt.Sprintf(late, at.Add(time.Second).Format(time.RFC3339Nano), "10.244.0.206", "10.244.0.177",
			`{"identity":16370,"namespace":"bookinfo","pod_name":"ratings-v1-b6994bb9-jgqxb","labels":["k8s:app=ratings"]}`)
	tailFile := filepath.Join(t.TempDir(), "tail.json")
	if err := os.WriteFile(tailFile, []byte(tail), 0o644); err != nil {
		t.Fatal(err)
	}
	return startReplay(t, hubble.ReplayConfig{Files: append(files, tailFile), Rate: rate})
}

// storedFlows lists every stored flow's identity with how often it is
// stored, and the rows in all.
func storedFlows(t *testing.T, dsn string) (keys []string, rows int) {
	t.Helper()
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Query(context.Background(), `SELECT concat(toString(time), ' ', node, ' ', toString(src_ip), ':', toString(src_port), ' ',
		toString(dst_ip), ':', toString(dst_port), ' ', verdict, ' ', toString(is_reply), ' ', src_namespace, '/', src_workload), count()
		FROM flows GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for res.Next() {
		var k string
		var n uint64
		if err := res.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, fmt.Sprintf("%s ×%d", k, n))
		rows += int(n)
	}
	return keys, rows
}

// storedFindings lists the findings as the detectors left them.
func storedFindings(t *testing.T, dsn string) []string {
	t.Helper()
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Query(context.Background(), `SELECT concat(detector, ' ', severity, ' ', namespace, '/', workload, ' peer=', peer, ' ',
		toString(start), '..', toString(end), ' ', status, ' flows=', toString(flows)) FROM findings FINAL ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var out []string
	for res.Next() {
		var s string
		if err := res.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func rowCount(t *testing.T, dsn string) int {
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		return 0
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM flows").Scan(&n); err != nil {
		return 0
	}
	return int(n)
}

func diffLists(a, b []string) string {
	in := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var sb strings.Builder
	for _, x := range a {
		if !mb[x] {
			fmt.Fprintf(&sb, "  only in the first: %s\n", x)
		}
	}
	for _, x := range b {
		if !ma[x] {
			fmt.Fprintf(&sb, "  only in the second: %s\n", x)
		}
	}
	return sb.String()
}

// TestShardedServeMatchesOneServe replays the incident scenarios to one
// serve and, at the same time, to two replicas with --shard 0/2 and 1/2
// writing into another database: the replicas together store every flow
// exactly once and raise exactly the findings the single serve raises.
func TestShardedServeMatchesOneServe(t *testing.T) {
	if testing.Short() {
		t.Skip("three serves over 10,000 flows")
	}
	replay := shardReplay(t, 4000)
	single, _ := chtest.Database(t)
	sharded, _ := chtest.Database(t)
	args := func(dsn string, extra ...string) []string {
		return append([]string{"serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--flush-interval", "200ms", "--log-level", "warn", "--flows-ttl", "0", "--page=false"}, extra...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs []<-chan error
	var logs []*syncBuffer
	for _, a := range [][]string{args(single), args(sharded, "--shard", "0/2"), args(sharded, "--shard", "1/2")} {
		done, l := runInBackground(ctx, a...)
		runs, logs = append(runs, done), append(logs, l)
	}
	want := replay.Len()
	waitUntil(t, 60*time.Second, fmt.Sprintf("the single serve to store %d flows", want), func() bool { return rowCount(t, single) >= want })
	waitUntil(t, 60*time.Second, fmt.Sprintf("the replicas to store %d flows", want), func() bool { return rowCount(t, sharded) >= want })
	time.Sleep(1500 * time.Millisecond) // duplicates, if any, would land now
	cancel()
	for i, done := range runs {
		if err := <-done; err != nil {
			t.Fatalf("serve %d: %v\n%s", i, err, logs[i].String())
		}
	}
	oneKeys, oneRows := storedFlows(t, single)
	shKeys, shRows := storedFlows(t, sharded)
	if oneRows != want || shRows != want || !reflect.DeepEqual(oneKeys, shKeys) {
		t.Fatalf("stored flows: one serve %d rows, the replicas %d; the replay sent %d\n%s", oneRows, shRows, want, diffLists(oneKeys, shKeys))
	}
	oneFindings, shFindings := storedFindings(t, single), storedFindings(t, sharded)
	if len(oneFindings) == 0 {
		t.Fatal("the single serve raised no finding over the incident scenarios")
	}
	if !reflect.DeepEqual(oneFindings, shFindings) {
		t.Fatalf("findings differ: one serve %d, the replicas %d\n%s", len(oneFindings), len(shFindings), diffLists(oneFindings, shFindings))
	}
	t.Logf("%d flows and %d findings, the same from one serve and from two replicas", shRows, len(shFindings))
	// The split, by the namespace that opened each flow (RUNBOOK's query).
	conn, err := clickhouse.Open(context.Background(), sharded)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Query(context.Background(), "SELECT if(is_reply AND dst_namespace != '', dst_namespace, src_namespace) AS opener, count() FROM flows GROUP BY opener")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	per := make([]uint64, 2)
	for res.Next() {
		var ns string
		var n uint64
		if err := res.Scan(&ns, &n); err != nil {
			t.Fatal(err)
		}
		per[hubble.ShardOf(ns, 2)] += n
	}
	t.Logf("replica 0/2 took about %d flows, 1/2 about %d", per[0], per[1])
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("one replica took nothing: %v", per)
	}
	for _, f := range shFindings {
		t.Log("  ", f)
	}
}

// TestShardedServeSurvivesSIGKILL kills replica 1/2 mid-stream and starts
// it again: it resumes its own share after the newest flow it stored, so
// the two replicas still store every flow exactly once.
func TestShardedServeSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("replicas killed and restarted")
	}
	replay := shardReplay(t, 700) // replica 1 takes ~14 s for its ~9,700 flows
	dsn, _ := chtest.Database(t)
	dataDirs := []string{t.TempDir(), t.TempDir()}
	start := func(i int) *exec.Cmd {
		args, _ := json.Marshal([]string{"serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", dataDirs[i],
			"--shard", fmt.Sprintf("%d/2", i), "--flush-interval", "300ms", "--detect=false", "--log-level", "warn", "--flows-ttl", "0", "--page=false"})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FLOWWARDEN_TEST_RUN_CLI="+string(args))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	zero, one := start(0), start(1)
	want := replay.Len()
	waitUntil(t, 60*time.Second, "the replicas to store some flows", func() bool { return rowCount(t, dsn) >= 2500 })
	if err := one.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = one.Wait()
	killedAt := rowCount(t, dsn)
	if killedAt >= want {
		t.Fatalf("replica 1/2 had stored everything (%d flows) before it was killed: not mid-stream", killedAt)
	}
	t.Logf("killed replica 1/2 with %d of %d flows stored", killedAt, want)
	again := start(1)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			for _, c := range []*exec.Cmd{zero, again} {
				_ = c.Process.Signal(syscall.SIGTERM)
				_ = c.Wait()
			}
		})
	}
	defer stop()
	waitUntil(t, 60*time.Second, fmt.Sprintf("all %d flows", want), func() bool { return rowCount(t, dsn) >= want })
	time.Sleep(1500 * time.Millisecond) // duplicates, if any, would land now
	stop()
	keys, rows := storedFlows(t, dsn)
	var dups []string
	for _, k := range keys {
		if !strings.HasSuffix(k, " ×1") {
			dups = append(dups, k)
		}
	}
	// The recording holds a few flows twice (same identity, same time):
	// compare with what one stream of it stores.
	ref, _ := chtest.Database(t)
	refCtx, refCancel := context.WithCancel(context.Background())
	defer refCancel()
	done, logs := runInBackground(refCtx, "serve", "--clickhouse", ref, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--flush-interval", "200ms", "--detect=false", "--log-level", "warn", "--flows-ttl", "0", "--page=false")
	waitUntil(t, 60*time.Second, "the reference serve", func() bool { return rowCount(t, ref) >= want })
	refCancel()
	if err := <-done; err != nil {
		t.Fatalf("reference serve: %v\n%s", err, logs.String())
	}
	refKeys, refRows := storedFlows(t, ref)
	if rows != want || refRows != want || !reflect.DeepEqual(keys, refKeys) {
		t.Fatalf("after SIGKILL and restart of replica 1/2: %d rows (one serve: %d), the replay sent %d; stored more than once: %d\n%s",
			rows, refRows, want, len(dups), diffLists(refKeys, keys))
	}
}
