package envoy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

func logLine(i int) string {
	return fmt.Sprintf(`[2020-11-25T21:26:%02d.409Z] "GET /item/%d HTTP/1.1" 200 - via_upstream - "-" 0 135 4 4 "-" "curl" "id-%d" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`, i%60, i, i) + "\n"
}

// TestFollowAcrossRotation appends, rotates by rename, recreates, appends
// again and truncates: every line written after the follower started is
// read exactly once.
func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "istio-proxy.log")
	if err := os.WriteFile(path, []byte(logLine(0)), 0o644); err != nil { // before start: not read
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range fs {
			seen[f.HTTPPath]++
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stats ingest.Stats
	fo := newFollower(t, FollowConfig{Path: path, Poll: 20 * time.Millisecond}, sink, &stats)
	go func() { done <- fo.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	appendLines := func(from, to int) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			_, _ = f.WriteString(logLine(i))
		}
		f.Close()
	}
	appendLines(1, 11)
	time.Sleep(100 * time.Millisecond)
	if err := os.Rename(path, path+".1"); err != nil { // logrotate
		t.Fatal(err)
	}
	appendLines(11, 21) // the new file
	time.Sleep(150 * time.Millisecond)
	if err := os.Truncate(path, 0); err != nil { // copytruncate
		t.Fatal(err)
	}
	appendLines(21, 26)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 25 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 26; i++ {
		if seen[fmt.Sprintf("/item/%d", i)] != 1 {
			t.Errorf("line %d read %d times", i, seen[fmt.Sprintf("/item/%d", i)])
		}
	}
	if seen["/item/0"] != 0 {
		t.Error("a line written before the follower started was read")
	}
}

// TestFollowWritesInBatchesAndStopsOnTime: lines appended together reach
// the sink in a few writes (each write of serve's spool is an fsync), and a
// log that grows faster than the sink takes it does not keep Follow from
// stopping when ctx ends.
func TestFollowWritesInBatchesAndStopsOnTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	writes, flows := 0, 0
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error {
		time.Sleep(time.Millisecond) // a slow store
		mu.Lock()
		defer mu.Unlock()
		writes++
		flows += len(fs)
		return nil
	})
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return writes, flows
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var stats ingest.Stats
	fo := newFollower(t, FollowConfig{Path: path, Poll: 10 * time.Millisecond}, sink, &stats)
	go func() { done <- fo.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)

	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	appendLines := func(n int) {
		var b []byte
		for i := range n {
			b = append(b, logLine(i)...)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	appendLines(2000)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, n := counts(); n == 2000 {
			break
		}
	}
	if w, n := counts(); n != 2000 || w > 20 {
		t.Fatalf("2000 lines appended at once reached the sink as %d flows in %d writes, want 2000 in a few", n, w)
	}

	// A writer faster than the slow sink (bounded: at most 5 s of it).
	stopWriting := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
			select {
			case <-stopWriting:
				return
			case <-time.After(5 * time.Millisecond):
				appendLines(500)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Error("Follow did not stop within 2s of its context ending while the log kept growing")
	}
	close(stopWriting)
	<-wrote
}

// TestFollowGoesOnWhereItStopped: with kept positions, lines written while
// the follower was stopped are read when it starts again, once; a file
// rotated or truncated meanwhile is read from its start; a follower with no
// kept position starts at the end.
func TestFollowGoesOnWhereItStopped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "istio-proxy.log")
	keep := filepath.Join(dir, "positions.json")
	write := func(flag int, from, to int) {
		f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := from; i < to; i++ {
			if _, err := f.WriteString(logLine(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// run follows until the lines from..to-1 arrived (and a little more,
	// for any repeat), then stops; it returns the items read.
	run := func(name string, from, to int, during func()) []string {
		t.Helper()
		positions, err := OpenPositions(keep)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var got []string
		sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error {
			mu.Lock()
			defer mu.Unlock()
			for _, f := range fs {
				got = append(got, f.HTTPPath)
			}
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		var stats ingest.Stats
		fo := newFollower(t, FollowConfig{Path: path, Poll: 10 * time.Millisecond, Positions: positions}, sink, &stats)
		go func() { done <- fo.Run(ctx) }()
		time.Sleep(50 * time.Millisecond)
		if during != nil {
			during()
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= to-from {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var want []string
		for i := from; i < to; i++ {
			want = append(want, fmt.Sprintf("/item/%d", i))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: read %v, want %v", name, got, want)
		}
		return got
	}

	write(os.O_TRUNC, 0, 5)                                       // before the first start: not read
	run("first start", 5, 8, func() { write(os.O_APPEND, 5, 8) }) // from the end
	write(os.O_APPEND, 8, 12)                                     // while stopped
	run("restart", 8, 12, nil)                                    // exactly what was missed
	if err := os.Rename(path, path+".1"); err != nil {            // rotated while stopped
		t.Fatal(err)
	}
	write(os.O_TRUNC, 12, 15)
	run("after rotation", 12, 15, nil)
	write(os.O_TRUNC, 15, 17) // truncated and rewritten while stopped, shorter than before
	run("after truncation", 15, 17, nil)
	run("nothing new", 0, 0, nil)
}

// TestPositionsFileRefusesWhatItCannotRead: a damaged or foreign positions
// file is refused with its path and what to do, not taken for "no
// positions" (which would silently skip what was written meanwhile).
func TestPositionsFileRefusesWhatItCannotRead(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"truncated": `{"version":1,"files":{"/var/log/a.log":{"inode":1,`,
		"version 2": `{"version":2,"files":{}}`,
		"empty":     ``,
	} {
		path := filepath.Join(dir, "positions.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenPositions(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "delete it") {
			t.Errorf("%s positions file: %v", name, err)
		}
	}
	if p, err := OpenPositions(filepath.Join(dir, "none.json")); err != nil || p == nil {
		t.Errorf("no positions file yet: %v", err)
	}
}

// newFollower is NewFollower for a configuration that must be accepted.
func newFollower(tb testing.TB, cfg FollowConfig, sink ingest.Sink, stats *ingest.Stats) *Follower {
	tb.Helper()
	f, err := NewFollower(cfg, sink, stats)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// TestNewFollowerDoesNoIO: NewFollower refuses a follower without a file
// or a sink, and opens, creates and saves nothing: a file that does not
// exist yet is first looked for by Run, which waits for it.
func TestNewFollowerDoesNoIO(t *testing.T) {
	sink := ingest.SinkFunc(func(context.Context, ...schema.Flow) error { return nil })
	if _, err := NewFollower(FollowConfig{}, sink, nil); err == nil {
		t.Error("a follower of no file was accepted")
	}
	if _, err := NewFollower(FollowConfig{Path: "x.log"}, nil, nil); err == nil {
		t.Error("a follower without a sink was accepted")
	}
	dir := t.TempDir()
	posFile := filepath.Join(dir, PositionsFile)
	positions, err := OpenPositions(posFile)
	if err != nil {
		t.Fatal(err)
	}
	fo, err := NewFollower(FollowConfig{Path: filepath.Join(dir, "later.log"), Positions: positions, Poll: 5 * time.Millisecond}, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(posFile); !os.IsNotExist(err) {
		t.Fatalf("NewFollower wrote the positions file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := fo.Run(ctx); err != nil {
		t.Fatalf("Run on a file not there yet: %v", err)
	}
}
