package analyze

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowwarden/flowwarden/schema"
)

// fakeWall is a wall clock that moves only when told to.
type fakeWall struct {
	mu sync.Mutex
	t  time.Time
}

func (w *fakeWall) now() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.t }
func (w *fakeWall) add(d time.Duration) {
	w.mu.Lock()
	w.t = w.t.Add(d)
	w.mu.Unlock()
}

// TestRunResolvesQuietLiveStream: the engine closes windows on its own wall
// clock, whatever feeds it (the engine knows no source): a live stream (the
// probe arrived when it happened) that goes quiet gets its finding resolved
// by Run alone; a replay of the same probe an hour late does not (its
// windows close on its own flows), and Run stops when ctx ends.
func TestRunResolvesQuietLiveStream(t *testing.T) {
	for _, c := range []struct {
		name     string
		late     time.Duration
		resolved bool
	}{{"live", 2 * time.Second, true}, {"replay", time.Hour, false}} {
		t.Run(c.name, func(t *testing.T) {
			wall := &fakeWall{t: t0.Add(c.late)}
			var col Collector
			m := NewMetrics(nil)
			e, err := NewEngine(DefaultConfig(), &col, m)
			if err != nil {
				t.Fatal(err)
			}
			e.now, e.wallTick = wall.now, time.Millisecond
			_ = e.Write(context.Background(), podFlow("shop", "web", t0, "169.254.169.254"))
			if got := col.Findings(); len(got) != 1 || got[0].Status != schema.FindingOpen {
				t.Fatalf("after the probe: %+v", got)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			// Ten quiet minutes of wall time pass, no flow arrives.
			for range 120 {
				wall.add(5 * time.Second)
				time.Sleep(2 * time.Millisecond)
			}
			deadline := time.Now().Add(60 * time.Second)
			// Wait (bounded) until the engine has both resolved the finding
			// and ticked past the last wall time: on a loaded machine its
			// ticks may lag the loop above.
			caughtUp := func() bool {
				return col.Findings()[len(col.Findings())-1].Status == schema.FindingResolved &&
					testutil.ToFloat64(m.Closed) >= float64(t0.Add(9*time.Minute).Unix())
			}
			for c.resolved && !caughtUp() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got := col.Findings()
			last := got[len(got)-1]
			if resolved := last.Status == schema.FindingResolved; resolved != c.resolved {
				t.Fatalf("resolved %v, want %v: %+v", resolved, c.resolved, last)
			}
			closed := testutil.ToFloat64(m.Closed)
			if c.resolved && closed < float64(t0.Add(9*time.Minute).Unix()) {
				t.Fatalf("windows closed until %v, want about ten minutes after the probe", time.Unix(int64(closed), 0).UTC())
			}
			if !c.resolved && closed > float64(t0.Unix()) {
				t.Fatalf("a replay's windows were closed on the wall clock, until %v", time.Unix(int64(closed), 0).UTC())
			}
		})
	}
}
