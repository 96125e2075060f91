package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// sampleReplay serves the 9 hubble-otel samples (1,916 flows, 67 of them
// exact duplicates) at rate flows/s on a fixed address.
func sampleReplay(t *testing.T, rate float64) *hubble.Replay {
	t.Helper()
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	return startReplay(t, hubble.ReplayConfig{Files: files, Rate: rate})
}

// startReplay serves cfg's recordings (on a free loopback port unless
// cfg.Listen says otherwise) until the test ends.
func startReplay(t testing.TB, cfg hubble.ReplayConfig) *hubble.Replay {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	r, err := hubble.NewReplay(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// countFlows returns count() and the number of distinct flow events.
func countFlows(t *testing.T, dsn string) (rows, distinct uint64) { return countFlowsB(t, dsn) }

func countFlowsB(t testing.TB, dsn string) (rows, distinct uint64) {
	t.Helper()
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		return 0, 0
	}
	defer conn.Close()
	if err := conn.QueryRow(context.Background(),
		"SELECT count(), uniqExact(time, src_ip, dst_ip, src_port, dst_port, verdict, is_reply, node) FROM flows").Scan(&rows, &distinct); err != nil {
		return 0, 0
	}
	return rows, distinct
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClickHouseOutage stops the real ClickHouse for 30 s while flows stream
// in, restarts it, and expects exactly the flows sent, once each.
func TestClickHouseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	chDir := t.TempDir()
	srv, err := embedded.New(embedded.Config{DataDir: chDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Stop() }()
	dsn := srv.DSN("outage")
	replay := sampleReplay(t, 40) // 1,916 flows over ~48 s

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, _ := runInBackground(ctx, "serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--flush-interval", "300ms", "--detect=false", "--log-level", "error", "--flows-ttl", "0")
	waitUntil(t, 30*time.Second, "flows before the outage", func() bool { n, _ := countFlows(t, dsn); return n >= 100 })
	srv.Stop()
	outage := time.Now()
	time.Sleep(30 * time.Second)
	srv2, err := embedded.New(embedded.Config{DataDir: chDir, TCPPort: portOf(srv.NativeAddr()), HTTPPort: portOf(srv.HTTPAddr())}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv = srv2
	t.Logf("ClickHouse was down for %s; replay served %d flows meanwhile", time.Since(outage).Round(time.Second), replay.Served())
	waitUntil(t, 90*time.Second, "all 1,916 flows", func() bool { n, _ := countFlows(t, dsn); return n >= 1916 })
	time.Sleep(time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	rows, distinct := countFlows(t, dsn)
	if rows != 1916 || distinct != 1916-67 {
		t.Fatalf("after the outage: %d rows, %d distinct; want 1916 and 1849", rows, distinct)
	}
}

func portOf(addr string) int {
	var p int
	_, _ = fmt.Sscan(addr[strings.LastIndexByte(addr, ':')+1:], &p)
	return p
}

// TestServeSurvivesSIGKILL kills serve mid-stream and starts it again: the
// spool is replayed and the stream resumes after the newest durable flow,
// so ClickHouse ends with exactly the flows the replay server sent.
func TestServeSurvivesSIGKILL(t *testing.T) {
	dsn, _ := chtest.Database(t)
	replay := sampleReplay(t, 250) // ~8 s for 1,916 flows
	dataDir := t.TempDir()
	start := func() *exec.Cmd {
		args, _ := json.Marshal([]string{"serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", dataDir,
			"--flush-interval", "300ms", "--detect=false", "--log-level", "warn", "--flows-ttl", "0"})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FLOWWARDEN_TEST_RUN_CLI="+string(args))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	first := start()
	waitUntil(t, 30*time.Second, "serve to store some flows", func() bool { n, _ := countFlows(t, dsn); return n >= 300 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killedAt, _ := countFlows(t, dsn)
	t.Logf("killed serve with %d flows stored, %d served by the replay", killedAt, replay.Served())
	second := start()
	var once sync.Once
	stop := func() { once.Do(func() { _ = second.Process.Signal(syscall.SIGTERM); _ = second.Wait() }) }
	defer stop()
	waitUntil(t, 60*time.Second, "all 1,916 flows", func() bool { n, _ := countFlows(t, dsn); return n >= 1916 })
	time.Sleep(1500 * time.Millisecond) // duplicates, if any, would land now
	stop()
	rows, distinct := countFlows(t, dsn)
	if rows != 1916 || distinct != 1916-67 {
		dumpDuplicates(t, dsn)
		t.Fatalf("after SIGKILL and restart: %d rows, %d distinct; want 1916 and 1849", rows, distinct)
	}
}

func dumpDuplicates(t *testing.T, dsn string) {
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		return
	}
	defer conn.Close()
	rows, err := conn.Query(context.Background(), "SELECT toString(time), src_addr, dst_addr, src_port, dst_port, verdict, count() c FROM flows GROUP BY ALL HAVING c > 1 ORDER BY 1")
	expected := map[string]int{}
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		for _, l := range strings.Split(string(raw), "\n") {
			if i := strings.Index(l, `"time":"`); i >= 0 {
				expected[l[i+8:i+8+30]]++
			}
		}
	}
	if err != nil {
		t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var ts, s, d, v string
		var sp, dp uint16
		var c uint64
		_ = rows.Scan(&ts, &s, &d, &sp, &dp, &v, &c)
		key := strings.Replace(ts, " ", "T", 1) + "Z"
		if int(c) != expected[key] {
			t.Logf("dup: %s %s:%d → %s:%d %s ×%d (expected ×%d)", ts, s, sp, d, dp, v, c, expected[key])
		}
	}
}

// TestSecretsStayOutOfLogs passes a password in the DSN (and a GitHub
// token in a file) and greps everything the commands print.
func TestSecretsStayOutOfLogs(t *testing.T) {
	// A server of its own: the embedded ClickHouse does not survive repeated
	// failed logins (the supervisor restarts it in serve), and the shared
	// test server must.
	srv, err := embedded.New(embedded.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	native := srv.NativeAddr()
	const secret = "s3cr3t-Pa55word-do-not-print"
	dsn := "clickhouse://default:" + secret + "@" + native + "/flowwarden_secret_test"
	var out syncBuffer
	for _, args := range [][]string{
		{"query", "--clickhouse", dsn, "--log-level", "debug", "SELECT 1"},
		{"serve", "--clickhouse", dsn, "--hubble", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--log-level", "debug", "--data-dir", t.TempDir()},
		{"ingest", "--clickhouse", dsn, "--hubble-file", "../../testdata/hubble/basic-sample-10-flows.json", "--log-level", "debug"},
	} {
		cmd := newRootCommand()
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := cmd.ExecuteContext(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s with a wrong password succeeded", args[0])
		}
		out.Write([]byte(err.Error() + "\n"))
	}
	if strings.Contains(out.String(), secret) {
		t.Fatalf("the password leaked:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "xxxxx") {
		t.Fatalf("errors should name the server with the password masked:\n%s", out.String())
	}
}
