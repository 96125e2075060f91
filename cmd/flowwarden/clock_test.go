package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestServeRestartsPastAFlowFromTheFuture: the database holds a flow dated
// 2100 (imported past the clock check, as one stored before it existed).
// It is the newest durable flow, so a restart would resume after it and
// store no live flow until 2100; serve must start live instead, and ingest
// must refuse such a flow unless told otherwise.
func TestServeRestartsPastAFlowFromTheFuture(t *testing.T) {
	dsn, _ := chtest.Database(t)
	raw, err := os.ReadFile("../../testdata/hubble/basic-sample-10-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	future := strings.ReplaceAll(line, `"time":"2021-`, `"time":"2100-`)
	file := filepath.Join(t.TempDir(), "future.json")
	if err := os.WriteFile(file, []byte(future+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A file that yields no flow fails ingest, with the reason printed.
	out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--log-level", "warn", "--hubble-file", file)
	if err == nil || !strings.Contains(err.Error(), "no flow in") || !strings.Contains(out, "rejected      1  time in the future") {
		t.Fatalf("ingest of a 2100 flow: %v\n%s", err, out)
	}
	if out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--log-level", "warn", "--max-clock-skew", "-1ns", "--hubble-file", file); err != nil ||
		!strings.Contains(out, "1 flows written") {
		t.Fatalf("ingest --max-clock-skew -1ns: %v\n%s", err, out)
	}

	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	replay := startReplay(t, hubble.ReplayConfig{Files: files[:2], Rate: 2000, ShiftToNow: true})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--flush-interval", "200ms", "--detect=false", "--log-level", "warn", "--flows-ttl", "0")
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	live := func() uint64 {
		var n uint64
		_ = conn.QueryRow(context.Background(), "SELECT count() FROM flows WHERE time > now() - INTERVAL 1 HOUR AND time < now() + INTERVAL 1 HOUR").Scan(&n)
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for live() < uint64(replay.Len()) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("%d of %d live flows stored after a restart over a 2100 flow\n%s", live(), replay.Len(), logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if !strings.Contains(logs.String(), "the newest durable flow is in the future") {
		t.Errorf("serve did not say why it did not resume:\n%s", logs.String())
	}
}
