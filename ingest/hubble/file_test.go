package hubble

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

// countingSink counts the flows written to it.
type countingSink struct {
	mu sync.Mutex
	n  int
}

func (c *countingSink) Write(_ context.Context, flows ...schema.Flow) error {
	c.mu.Lock()
	c.n += len(flows)
	c.mu.Unlock()
	return nil
}

// allSamples is every published sample line, one per line, in one buffer.
func allSamples(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range sampleFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(bytes.TrimRight(raw, "\n"))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// completeLines counts the newline-ended lines gzip yields from a damaged
// file before its error, and how many of them lead it unchanged from orig.
func completeLines(t *testing.T, gz, orig []byte) (complete, intact int) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, zr)
	if err == nil {
		t.Fatal("the damaged file reads without error")
	}
	got := bytes.SplitAfter(out.Bytes(), []byte("\n"))
	want := bytes.SplitAfter(orig, []byte("\n"))
	for intact < len(got) && bytes.Equal(got[intact], want[intact]) {
		intact++
	}
	return bytes.Count(out.Bytes(), []byte("\n")), intact
}

// TestDamagedGzipKeepsCompleteLines: a .gz cut short or corrupted in the
// middle delivers every complete line before the damage, in the last
// partial batch too, and then reports the error. (A corrupted stream may
// inflate to garbage up to the checksum: those lines are read and
// rejected; the intact ones before it are all delivered.)
func TestDamagedGzipKeepsCompleteLines(t *testing.T) {
	data := allSamples(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	full := gz.Bytes()
	corrupt := bytes.Clone(full)
	for i := len(corrupt) * 3 / 4; i < len(corrupt)*3/4+64; i++ {
		corrupt[i] ^= 0x5a
	}
	damaged := map[string][]byte{
		"cut at two thirds": full[:len(full)*2/3],
		"cut near the end":  full[:len(full)-20],
		"corrupted":         corrupt,
	}
	dir := t.TempDir()
	for name, b := range damaged {
		complete, intact := completeLines(t, b, data)
		if intact < batchSize+1 || intact%batchSize == 0 {
			t.Fatalf("%s: %d intact lines; the test needs a partial last batch after a full one", name, intact)
		}
		path := filepath.Join(dir, "flows.json.gz")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{1, 3} {
			var sink countingSink
			var stats ingest.Stats
			err := ReadFile(context.Background(), path, workers, &sink, &stats)
			if err == nil {
				t.Errorf("%s, %d workers: no error reported", name, workers)
			}
			s := stats.Snapshot()
			if int(s.Read) < complete || sink.n < intact || s.Accepted != int64(sink.n) {
				t.Errorf("%s, %d workers: %d flows delivered, %d lines read; want all %d intact lines delivered of %d complete ones",
					name, workers, sink.n, s.Read, intact, complete)
			}
			// Cut short, every complete line is intact and a flow; only the
			// line cut in two is rejected.
			if name != "corrupted" && (sink.n != complete || s.RejectedTotal() > 1) {
				t.Errorf("%s, %d workers: %d flows delivered, want the %d complete lines: %s", name, workers, sink.n, complete, s)
			}
		}
	}
}

// failingReader yields data, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestReadErrorKeepsCompleteLines: a read error in the middle of a line
// (a disk error, a dropped network mount) delivers every line before it.
func TestReadErrorKeepsCompleteLines(t *testing.T) {
	data := allSamples(t)
	cut := len(data)*2/3 + 7 // inside a line
	want := bytes.Count(data[:cut], []byte("\n"))
	boom := errors.New("input/output error")
	for _, workers := range []int{1, 2} {
		var sink countingSink
		var stats ingest.Stats
		r := &failingReader{data: bytes.Clone(data[:cut]), err: boom}
		var err error
		if workers == 1 {
			err = ReadLines(context.Background(), r, "disk", &sink, &stats)
		} else {
			err = readParallel(context.Background(), r, "disk", workers, ingest.TimeWindow{}, &sink, &stats)
		}
		if !errors.Is(err, boom) {
			t.Errorf("%d workers: error %v, want the read error", workers, err)
		}
		if sink.n != want {
			t.Errorf("%d workers: %d flows delivered (%s), want %d", workers, sink.n, stats.Snapshot(), want)
		}
		if s := stats.Snapshot(); s.RejectedTotal() != 1 || s.Rejected["truncated JSON"] != 1 {
			t.Errorf("%d workers: the cut line must be rejected as truncated: %s", workers, s)
		}
	}
}

// TestFileTimeWindow: a file import keeps old recordings (no lower bound
// unless asked for) and rejects flows from the future, with their reasons.
func TestFileTimeWindow(t *testing.T) {
	lines := sampleLines(t)["basic-sample-10-flows.json"]
	future := bytes.ReplaceAll(bytes.Clone(lines[0]), []byte(`"time":"2021-`), []byte(`"time":"2100-`))
	soon := bytes.ReplaceAll(bytes.Clone(lines[1]), []byte(`"time":"2021-06-16T16:52:13`), []byte(`"time":"2021-06-16T16:55:13`))
	path := filepath.Join(t.TempDir(), "f.json")
	data := append(bytes.Join(lines, []byte("\n")), '\n')
	data = append(data, future...)
	data = append(data, '\n')
	data = append(data, soon...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// A clock at the recording's time: the flow 3 minutes later is within
	// the skew, the 2100 one is not; and with MaxAge, nothing before it is.
	clock := func() time.Time { return time.Date(2021, 6, 16, 16, 53, 0, 0, time.UTC) }
	for _, c := range []struct {
		name     string
		window   ingest.TimeWindow
		accepted int
		rejected map[string]int64
	}{
		{"default", ingest.TimeWindow{}, len(lines) + 1, map[string]int64{ingest.ReasonFuture: 1}},
		{"skew 1m", ingest.TimeWindow{MaxSkew: time.Minute, Now: clock}, len(lines), map[string]int64{ingest.ReasonFuture: 2}},
		{"no skew bound", ingest.TimeWindow{MaxSkew: -1, Now: clock}, len(lines) + 2, map[string]int64{}},
		{"max age", ingest.TimeWindow{MaxAge: time.Hour}, 0, map[string]int64{ingest.ReasonFuture: 1, ingest.ReasonTooOld: int64(len(lines) + 1)}},
	} {
		for _, workers := range []int{1, 2} {
			var sink countingSink
			var stats ingest.Stats
			if err := ReadFileConfig(context.Background(), path, FileConfig{Workers: workers, Window: c.window}, &sink, &stats); err != nil {
				t.Fatal(err)
			}
			s := stats.Snapshot()
			if sink.n != c.accepted || len(s.Rejected) != len(c.rejected) {
				t.Errorf("%s, %d workers: %d accepted, want %d: %s", c.name, workers, sink.n, c.accepted, s)
			}
			for reason, n := range c.rejected {
				if s.Rejected[reason] != n {
					t.Errorf("%s, %d workers: %d rejected as %q, want %d: %s", c.name, workers, s.Rejected[reason], reason, n, s)
				}
			}
		}
	}
}
