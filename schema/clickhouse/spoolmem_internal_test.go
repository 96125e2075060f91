package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TestSpoolBatchesFromMemoryAndFiles: with the drainers not yet running,
// ten segments are spooled; the newest four keep their batches in memory,
// the others are only files. Once the writer runs, every flow is stored
// exactly once and reads back as written (labels shared by many flows and
// labels of one flow each), whichever way its segment was inserted, and
// no batch is left in memory.
func TestSpoolBatchesFromMemoryAndFiles(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	cfg := DefaultWriterConfig()
	cfg.SpoolDir = t.TempDir()
	cfg.BatchSize = 100
	cfg.FlushInterval = time.Hour
	w, err := NewWriter(cfg, dsn, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	shared := []map[string]string{{"app": "a", "io.kubernetes.pod.namespace": "ns1"}, {"app": "b"}, nil}
	var flows []schema.Flow
	for i := range 1000 {
		f := testFlow(i)
		f.Src.Namespace, f.Src.Labels = "ns1", shared[i%len(shared)]
		f.Dst.Labels = map[string]string{"k8s:x": fmt.Sprint(i % 7), "pod": fmt.Sprint(i)}
		flows = append(flows, f)
	}
	for i := 0; i < len(flows); i += 37 {
		if err := w.Write(ctx, flows[i:min(i+37, len(flows))]...); err != nil {
			t.Fatal(err)
		}
	}
	w.spool.mu.Lock()
	inMemory, sealed := len(w.spool.mem), len(w.spool.closed)
	w.spool.mu.Unlock()
	if sealed != 10 || inMemory != cfg.Inserters+2 {
		t.Fatalf("%d segments sealed, %d batches in memory; want 10 and %d", sealed, inMemory, cfg.Inserters+2)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	waitFor(t, 30*time.Second, "the spool to drain", func() bool { n, open := w.spool.pending(); return n == 0 && !open })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(w.spool.mem) != 0 || w.spool.memCur != nil {
		t.Fatalf("%d batches left in memory", len(w.spool.mem))
	}
	var got []schema.Flow
	if err := EachFlow(ctx, conn, AllColumns, time.Unix(0, 0), time.Time{}, func(f *schema.Flow) { got = append(got, *f) }); err != nil {
		t.Fatal(err)
	}
	key := func(f schema.Flow) string { return fmt.Sprintf("%+v", f) }
	norm := func(fs []schema.Flow) []string {
		var out []string
		for _, f := range fs {
			f.Time = f.Time.UTC()
			if len(f.Src.Labels) == 0 {
				f.Src.Labels = nil
			}
			out = append(out, key(f))
		}
		sort.Strings(out)
		return out
	}
	g, want := norm(got), norm(flows)
	if len(g) != len(want) {
		t.Fatalf("stored %d flows, want %d", len(g), len(want))
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("flow %d reads back\n%s\nwant\n%s", i, g[i], want[i])
		}
	}
}
