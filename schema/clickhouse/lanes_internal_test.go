package clickhouse

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TestLanesStoreEveryFlowOnce: writers on several goroutines filling
// several lanes store every flow exactly once; Flush returns once every
// flow written before it is stored, in whichever lane; stopping inserts
// the lanes' partial batches, and Write is refused after.
func TestLanesStoreEveryFlowOnce(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	w, err := NewWriter(WriterConfig{BatchSize: 700, Lanes: 3, Inserters: 2, FlushInterval: time.Hour, Preallocate: true}, dsn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	flow := func(i int) schema.Flow {
		return schema.Flow{Time: base.Add(time.Duration(i) * time.Millisecond), Source: schema.SourceHubble, Verdict: schema.VerdictForwarded,
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Protocol: "TCP", DstPort: uint16(i % 60000),
			Src: schema.Endpoint{Namespace: "ns" + string(rune('a'+i%5)), Labels: map[string]string{"app": "x"}}}
	}
	count := func() (n, distinct uint64) {
		t.Helper()
		if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(time) FROM flows").Scan(&n, &distinct); err != nil {
			t.Fatal(err)
		}
		return n, distinct
	}
	const writers, each = 4, 2500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i += 97 {
				var fs []schema.Flow
				for j := i; j < min(i+97, each); j++ {
					fs = append(fs, flow(g*each+j))
				}
				if err := w.Write(ctx, fs...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, d := count(); n != writers*each || d != n {
		t.Fatalf("after Flush: %d rows, %d distinct, want %d", n, d, writers*each)
	}
	var tail []schema.Flow
	for i := range 123 {
		tail = append(tail, flow(writers*each+i))
	}
	if err := w.Write(ctx, tail...); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, d := count(); n != writers*each+123 || d != n {
		t.Fatalf("after stop: %d rows, %d distinct, want %d", n, d, writers*each+123)
	}
	if err := w.Write(ctx, flow(0)); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Write after stop: %v, want ErrWriterClosed", err)
	}
}
