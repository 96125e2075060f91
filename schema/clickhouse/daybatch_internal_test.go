package clickhouse

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/flowwarden/flowwarden/schema"
)

// TestDayBatchesStoreEveryFlowOnce: flows spanning more days than the
// writer keeps open, written interleaved from several goroutines, with a
// Flush in the middle and the writer stopped at the end, are all stored
// exactly once (count per day equals the input), and every insert wrote one
// part (one partition).
func TestDayBatchesStoreEveryFlowOnce(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	if err := conn.Exec(ctx, "SYSTEM STOP MERGES flows"); err != nil {
		t.Fatal(err)
	}
	metrics := NewWriterMetrics(nil)
	// Three open days at most, 400 rows each, 2×400 rows held in all: the
	// cap on days, the cap on rows and full batches all insert.
	w, err := NewWriter(WriterConfig{BatchSize: 400, Lanes: 2, Inserters: 2, DayBatches: 3, FlushInterval: time.Hour, Preallocate: true}, dsn, metrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	const days = 7
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := map[string]uint64{}
	flow := func(g, i int) schema.Flow {
		// Day by a stride, so that runs of one day are short and all
		// days stay in play.
		day := (i / 3) % days
		at := base.AddDate(0, 0, day).Add(time.Duration(g*100000+i) * time.Millisecond)
		return schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded,
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Protocol: "TCP", DstPort: uint16(g)}
	}
	const goroutines, perG = 3, 2000
	var mu sync.Mutex
	write := func(from, to int) {
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				var fs []schema.Flow
				for i := from; i < to; i++ {
					fs = append(fs, flow(g, i))
				}
				for len(fs) > 0 {
					n := min(len(fs), 37)
					if err := w.Write(ctx, fs[:n]...); err != nil {
						t.Error(err)
						return
					}
					fs = fs[n:]
				}
				mu.Lock()
				for i := from; i < to; i++ {
					want[flow(g, i).Time.Format(time.DateOnly)]++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	count := func() map[string]uint64 {
		rows, err := conn.Query(ctx, "SELECT toString(toDate(time)) AS d, count() FROM flows GROUP BY d")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[string]uint64{}
		for rows.Next() {
			var d string
			var n uint64
			if err := rows.Scan(&d, &n); err != nil {
				t.Fatal(err)
			}
			got[d] = n
		}
		return got
	}
	same := func(what string, got map[string]uint64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: days %v, want %v", what, got, want)
		}
		for d, n := range want {
			if got[d] != n {
				t.Fatalf("%s: day %s has %d flows, want %d (all: %v)", what, d, got[d], n, got)
			}
		}
	}
	write(0, perG/2)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	same("after Flush", count())
	write(perG/2, perG)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, flow(0, 0)); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Write after stop: %v", err)
	}
	if len(want) != days {
		t.Fatalf("input spans %d days, want %d", len(want), days)
	}
	same("after stop", count())
	var m dto.Metric
	if err := metrics.InsertSeconds.Write(&m); err != nil {
		t.Fatal(err)
	}
	inserts := m.GetHistogram().GetSampleCount()
	var parts uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'flows' AND active").Scan(&parts); err != nil {
		t.Fatal(err)
	}
	// Each insert wrote one part; more inserts than days: the caps took
	// batches out early.
	if parts != inserts || inserts <= days {
		t.Fatalf("%d inserts wrote %d parts of flows over %d days; want one part per insert, more than %d inserts", inserts, parts, days, days)
	}
}
