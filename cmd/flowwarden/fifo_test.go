package main

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// ingest of a FIFO nobody writes to stops when its context ends (SIGTERM).
func TestIngestFIFOWithoutWriterHonoursCancel(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "flows.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	dsn, _ := chtest.Database(t)
	for _, flag := range []string{"--hubble-file", "--envoy-file"} {
		ctx, cancel := context.WithCancel(context.Background())
		done, _ := runInBackground(ctx, "ingest", "--clickhouse", dsn, flag, fifo, "--log-level", "error")
		time.Sleep(500 * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			t.Logf("%s: %v", flag, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("ingest %s <fifo> ignored the cancellation", flag)
		}
	}
}
