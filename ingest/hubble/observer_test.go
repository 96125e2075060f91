package hubble

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func sampleFiles(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	if len(files) != 9 {
		t.Fatalf("want the 9 hubble-otel samples, found %d", len(files))
	}
	return files
}

// startReplay runs a replay server on addr until the returned stop is called.
func startReplay(t *testing.T, cfg ReplayConfig) (*Replay, func()) {
	t.Helper()
	r, err := NewReplay(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return r, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replay: %v", err)
		}
	}
}

// TestReplayServeKillRestart streams the samples over real gRPC from the
// replay server into ClickHouse, killing and restarting the server twice
// mid-stream: the rows must match the files exactly (no gap, no duplicate).
func TestReplayServeKillRestart(t *testing.T) {
	files := sampleFiles(t)
	cfg := ReplayConfig{Files: files, Listen: "127.0.0.1:0", Rate: 4000}
	r, stopReplay := startReplay(t, cfg)
	cfg.Listen = r.Addr() // restarts come back on the same port

	conn, w, stopWriter := openStore(t, clickhouse.WriterConfig{BatchSize: 200, FlushInterval: 50 * time.Millisecond})
	var stats ingest.Stats
	obs, err := NewObserver(ObserverConfig{Addr: cfg.Listen, MinBackoff: 20 * time.Millisecond, BatchSize: 64, BatchLinger: 20 * time.Millisecond}, w, &stats, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	obsDone := make(chan error, 1)
	go func() { obsDone <- obs.Run(ctx) }()

	for _, at := range []int64{400, 1100} {
		waitFor(t, 20*time.Second, func() bool { return r.Served() >= at }, "replay to serve %d flows", at)
		stopReplay() // kill mid-stream
		time.Sleep(150 * time.Millisecond)
		r, stopReplay = startReplay(t, cfg)
	}
	waitFor(t, 30*time.Second, func() bool { return stats.Snapshot().Accepted >= 1916 }, "1916 flows accepted")
	time.Sleep(200 * time.Millisecond) // anything extra would arrive now
	cancel()
	<-obsDone
	stopReplay()
	stopWriter()

	if obs.Connects() < 3 {
		t.Fatalf("observer connected %d times, want at least 3 (two restarts)", obs.Connects())
	}
	want := countVerdictsIndependently(t, files)
	got := verdictCounts(t, conn)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdict counts after restarts: ClickHouse %v, files %v", got, want)
	}
	// Same multiset of flows as a direct file ingest (67 lines of the samples
	// are exact duplicates and must stay so).
	var rows, distinct uint64
	if err := conn.QueryRow(context.Background(),
		"SELECT count(), uniqExact(time, src_ip, dst_ip, src_port, dst_port, verdict, is_reply, node) FROM flows").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != 1916 || distinct != 1916-67 {
		t.Fatalf("rows %d distinct %d, want 1916 and %d", rows, distinct, 1916-67)
	}
}

func TestObserverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	files := sampleFiles(t)[:1]
	r, stop := startReplay(t, ReplayConfig{Files: files, Listen: "127.0.0.1:0",
		TLS: TLSConfig{Enabled: true, CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.ca}})
	defer stop()

	run := func(tlsCfg TLSConfig) int64 {
		var stats ingest.Stats
		sink := ingest.SinkFunc(func(context.Context, ...schemaFlow) error { return nil })
		obs, err := NewObserver(ObserverConfig{Addr: r.Addr(), TLS: tlsCfg, MinBackoff: 20 * time.Millisecond, BatchLinger: 10 * time.Millisecond}, sink, &stats, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		_ = obs.Run(ctx)
		return stats.Snapshot().Accepted
	}
	good := TLSConfig{Enabled: true, CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "relay.hubble-relay.cilium.io"}
	if n := run(good); n != int64(r.Len()) {
		t.Fatalf("with a client certificate: %d flows, want %d", n, r.Len())
	}
	noCert := good
	noCert.CertFile, noCert.KeyFile = "", ""
	if n := run(noCert); n != 0 {
		t.Fatalf("without a client certificate the server must refuse; got %d flows", n)
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+what, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failingSink refuses the writes numbered in fail (1-based), as a spool
// whose appends fail (file descriptors exhausted) does, and passes the
// rest on.
type failingSink struct {
	next  ingest.Sink
	mu    sync.Mutex
	calls int
	fail  func(call int) bool
	// refused counts the flows refused.
	refused int
}

func (s *failingSink) Write(ctx context.Context, flows ...schemaFlow) error {
	s.mu.Lock()
	s.calls++
	fail := s.fail(s.calls)
	if fail {
		s.refused += len(flows)
	}
	s.mu.Unlock()
	if fail {
		return fmt.Errorf("spool append: open segment: %w", syscall.EMFILE)
	}
	return s.next.Write(ctx, flows...)
}

// TestSinkFailureLosesNoFlow: appends to the spool fail for a while in
// the middle of the stream; once they succeed again, every flow the replay
// server holds is stored exactly once. The observer's resume point moves
// only over flows the sink accepted, so the refused ones are asked for
// again.
func TestSinkFailureLosesNoFlow(t *testing.T) {
	files := sampleFiles(t)
	r, stopReplay := startReplay(t, ReplayConfig{Files: files, Listen: "127.0.0.1:0", Rate: 4000})
	defer stopReplay()
	wcfg := clickhouse.WriterConfig{BatchSize: 200, FlushInterval: 50 * time.Millisecond, SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 30}
	conn, w, stopWriter := openStore(t, wcfg)
	// Writes 4 to 9 fail: a burst in mid-stream (each a batch of 64).
	sink := &failingSink{next: w, fail: func(call int) bool { return call >= 4 && call <= 9 }}
	var stats ingest.Stats
	obs, err := NewObserver(ObserverConfig{Addr: r.Addr(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		BatchSize: 64, BatchLinger: 20 * time.Millisecond}, sink, &stats, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	obsDone := make(chan error, 1)
	go func() { obsDone <- obs.Run(ctx) }()
	waitFor(t, 30*time.Second, func() bool { return stats.Snapshot().Accepted >= int64(r.Len()) }, "%d flows accepted", r.Len())
	time.Sleep(200 * time.Millisecond) // anything extra would arrive now
	cancel()
	<-obsDone
	stopWriter()

	sink.mu.Lock()
	refused := sink.refused
	sink.mu.Unlock()
	if refused == 0 {
		t.Fatal("no write was refused: the test injected nothing")
	}
	var rows, distinct uint64
	if err := conn.QueryRow(context.Background(),
		"SELECT count(), uniqExact(time, src_ip, dst_ip, src_port, dst_port, verdict, is_reply, node) FROM flows").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(r.Len()) || rows != 1916 || distinct != 1916-67 {
		t.Fatalf("after %d flows were refused: %d rows (%d distinct), want exactly the %d flows replay holds (%d distinct); observer: %s",
			refused, rows, distinct, r.Len(), 1916-67, stats.Snapshot())
	}
	if got, want := verdictCounts(t, conn), countVerdictsIndependently(t, files); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdict counts: ClickHouse %v, files %v", got, want)
	}
	if obs.Connects() < 2 {
		t.Fatalf("observer connected %d times; a refused write must end the stream and resume", obs.Connects())
	}
}

// TestFutureFlowDoesNotStopRestart: a flow dated 2100 (a node with a wrong
// clock) stored before times were checked is the newest durable flow; a
// restart must not resume after it (the stream would wait until 2100), so
// live flows are stored again. And a live stream that carries such a flow
// rejects it with a reason, stores the others and keeps its resume point
// at their times.
func TestFutureFlowDoesNotStopRestart(t *testing.T) {
	ctx := context.Background()
	conn, w, stopWriter := openStore(t, clickhouse.WriterConfig{BatchSize: 200, FlushInterval: 50 * time.Millisecond})
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := w.Write(ctx, schemaFlow{Time: future, Node: "bad-clock", Source: "hubble", Verdict: "FORWARDED"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	resumeAt, keys, err := w.ResumePoint(ctx, conn, "hubble")
	if err != nil || !resumeAt.Equal(future) {
		t.Fatalf("resume point %v, %v; want the 2100 flow", resumeAt, err)
	}

	files := sampleFiles(t)[:2]
	r, stopReplay := startReplay(t, ReplayConfig{Files: files, Listen: "127.0.0.1:0", Rate: 5000, ShiftToNow: true})
	defer stopReplay()
	var stats ingest.Stats
	obs, err := NewObserver(ObserverConfig{Addr: r.Addr(), MinBackoff: 20 * time.Millisecond, BatchSize: 64, BatchLinger: 20 * time.Millisecond}, w, &stats, nil)
	if err != nil {
		t.Fatal(err)
	}
	if obs.Resume(resumeAt, keys) {
		t.Fatal("Resume took a resume point in 2100")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- obs.Run(runCtx) }()
	waitFor(t, 30*time.Second, func() bool { return stats.Snapshot().Accepted >= int64(r.Len()) }, "%d live flows accepted", r.Len())
	cancel()
	<-done
	stopWriter()
	var live uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM flows WHERE node != 'bad-clock' AND time > now() - INTERVAL 1 HOUR").Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != uint64(r.Len()) {
		t.Fatalf("%d live flows stored after the restart, want %d", live, r.Len())
	}

	// A 2100 flow in a live stream is rejected; the flows around it are not.
	lines := sampleLines(t)["basic-sample-10-flows.json"]
	bad := strings.Replace(string(lines[4]), `"time":"2021-`, `"time":"2100-`, 2)
	if bad == string(lines[4]) {
		t.Fatal("sample line has no 2021 time to move")
	}
	path := filepath.Join(t.TempDir(), "mixed.json")
	var in strings.Builder
	for i, l := range lines {
		if i == 4 {
			in.WriteString(bad + "\n")
		}
		in.Write(l)
		in.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r2, stop2 := startReplay(t, ReplayConfig{Files: []string{path}, Listen: "127.0.0.1:0"})
	defer stop2()
	var stats2 ingest.Stats
	sink := &countingSink{}
	obs2, err := NewObserver(ObserverConfig{Addr: r2.Addr(), BatchLinger: 10 * time.Millisecond}, sink, &stats2, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx2, cancel2 := context.WithCancel(ctx)
	go func() { done <- obs2.Run(runCtx2) }()
	waitFor(t, 30*time.Second, func() bool { return stats2.Snapshot().Read >= int64(len(lines)+1) }, "all lines read")
	time.Sleep(100 * time.Millisecond)
	cancel2()
	<-done
	s := stats2.Snapshot()
	if s.Accepted != int64(len(lines)) || s.Rejected[ingest.ReasonFuture] != 1 {
		t.Fatalf("want %d accepted and the 2100 flow rejected as %q: %s", len(lines), ingest.ReasonFuture, s)
	}
	if last := obs2.LastFlowTime(); last.Year() != 2021 {
		t.Fatalf("resume point %v, want the newest 2021 flow", last)
	}
}
