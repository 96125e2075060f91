package envoy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

// BenchmarkParseJSON compares the access-log parser with encoding/json
// decoding the same JSON lines into a map, in the same run. It reads the
// JSON samples inside the repository only (testdata/istio-envoy), so it
// runs in a plain clone and measures the same lines everywhere.
func BenchmarkParseJSON(b *testing.B) {
	lines, _ := jsonSampleLines(b, repoSampleFiles(b))
	if len(lines) == 0 {
		b.Fatal("no JSON samples")
	}
	var p Parser
	var ours, std time.Duration
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line := lines[i%len(lines)]
		t0 := time.Now()
		a, err := p.Parse(line)
		if err != nil {
			b.Fatal(err)
		}
		_ = ToFlow(&a)
		t1 := time.Now()
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			b.Fatal(err)
		}
		ours += t1.Sub(t0)
		std += time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/ours.Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)/std.Seconds(), "encoding-json-map-lines/s")
	b.ReportMetric(std.Seconds()/ours.Seconds(), "speedup-x")
}

// BenchmarkParseText measures the text formats alone.
func BenchmarkParseText(b *testing.B) {
	line := []byte(`[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`)
	var p Parser
	for i := 0; i < b.N; i++ {
		a, err := p.Parse(line)
		if err != nil {
			b.Fatal(err)
		}
		_ = ToFlow(&a)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkFollow follows a 20,000-line access log from its start into a
// sink that, like serve's spool, syncs a file on every write, and reads the
// same file with ReadLines (the batched `ingest --envoy-file` path) into the
// same kind of sink in the same run; ratio-x is Follow's rate over
// ReadLines'. (Follow once wrote each line on its own: one sync per line.)
func BenchmarkFollow(b *testing.B) {
	const lines = 20_000
	dir := b.TempDir()
	path := filepath.Join(dir, "istio-proxy.log")
	var buf []byte
	for i := range lines {
		buf = append(buf, logLine(i)...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	syncFile, err := os.Create(filepath.Join(dir, "spool"))
	if err != nil {
		b.Fatal(err)
	}
	defer syncFile.Close()
	var mu sync.Mutex
	got := 0
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error {
		mu.Lock()
		defer mu.Unlock()
		got += len(fs)
		if _, err := syncFile.Write([]byte{byte(len(fs))}); err != nil {
			return err
		}
		return syncFile.Sync()
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return got }
	var follow, readAll time.Duration
	for range b.N {
		mu.Lock()
		got = 0
		mu.Unlock()
		t0 := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		fo := newFollower(b, FollowConfig{Path: path, FromStart: true, Poll: time.Millisecond}, sink, &ingest.Stats{})
		go func() { done <- fo.Run(ctx) }()
		for count() < lines {
			time.Sleep(100 * time.Microsecond)
		}
		follow += time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}

		t1 := time.Now()
		if err := ReadFile(context.Background(), path, sink, &ingest.Stats{}); err != nil {
			b.Fatal(err)
		}
		readAll += time.Since(t1)
	}
	b.ReportMetric(float64(b.N*lines)/follow.Seconds(), "follow-lines/s")
	b.ReportMetric(float64(b.N*lines)/readAll.Seconds(), "readlines-lines/s")
	b.ReportMetric(readAll.Seconds()/follow.Seconds(), "ratio-x")
}
