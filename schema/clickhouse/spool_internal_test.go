package clickhouse

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	chgo "github.com/ClickHouse/ch-go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowwarden/flowwarden/schema"
)

func testFlow(i int) schema.Flow {
	return schema.Flow{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond), Source: schema.SourceHubble,
		Verdict: schema.VerdictForwarded, SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"),
		Protocol: "TCP", SrcPort: uint16(1024 + i%60000), DstPort: 80, Node: fmt.Sprintf("n%d", i)}
}

// brokenFS fails creates, renames and directory syncs (as a read-only or
// immutable directory does) while broken is set.
type brokenFS struct {
	osFS
	mu     sync.Mutex
	broken bool
}

func (b *brokenFS) set(v bool) { b.mu.Lock(); b.broken = v; b.mu.Unlock() }
func (b *brokenFS) err(op, path string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken {
		return &os.PathError{Op: op, Path: path, Err: syscall.EPERM}
	}
	return nil
}
func (b *brokenFS) Create(path string) (spoolFile, error) {
	if err := b.err("open", path); err != nil {
		return nil, err
	}
	return b.osFS.Create(path)
}
func (b *brokenFS) Rename(from, to string) error {
	if err := b.err("rename", from); err != nil {
		return err
	}
	return b.osFS.Rename(from, to)
}
func (b *brokenFS) SyncDir(dir string) error {
	if err := b.err("fsync", dir); err != nil {
		return err
	}
	return b.osFS.SyncDir(dir)
}

// TestSpoolSealFailureRecovers: the spool directory refuses creates and
// renames for a while (as when made immutable). Sealing fails, appends
// fail, Failure reports it; once the directory takes writes again, the
// writer goes on without a restart and every flow whose Write succeeded,
// plus every flow the source sent again after a failed Write, is stored
// exactly once.
func TestSpoolSealFailureRecovers(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	cfg := DefaultWriterConfig()
	cfg.SpoolDir = t.TempDir()
	// Long enough that the open segment of the first 250 flows is still
	// open when the test fails its seal (50 ms let the flush timer seal it
	// first on a busy machine: "no segment open").
	cfg.FlushInterval = 2 * time.Second
	cfg.BatchSize = 100
	metrics := NewWriterMetrics(nil)
	w, err := NewWriter(cfg, dsn, metrics, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	fs := &brokenFS{}
	w.spool.fs = fs
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	// A source that hands each flow over until the writer takes it.
	next, failedWrites := 0, 0
	send := func(n int) {
		for range n {
			f := testFlow(next)
			if err := w.Write(ctx, f); err != nil {
				failedWrites++
				continue // not taken: sent again below, as a resuming source does
			}
			next++
		}
	}
	send(250)
	// A segment is open (250 flows in segments of 100): its seal fails.
	if _, open := w.spool.pending(); !open {
		t.Fatal("no segment open")
	}
	fs.set(true)
	if err := w.spool.seal(0); err == nil || !strings.Contains(w.Failure().Error(), "spool seal failing") {
		t.Fatalf("seal with the directory refusing renames: %v; failure %v", err, w.Failure())
	}
	// So does every append that needs a new segment.
	send(1)
	if !strings.Contains(w.Failure().Error(), "spool append failing") {
		t.Fatalf("failure %v, want the append failing too", w.Failure())
	}
	send(50)
	if failedWrites == 0 {
		t.Fatal("appends kept succeeding while the directory refused new segments")
	}
	if got := testutil.ToFloat64(metrics.StorageFailing); got != 1 {
		t.Errorf("flowwarden_storage_failing = %v during the outage", got)
	}
	if !strings.Contains(w.Failure().Error(), "spool") {
		t.Errorf("failure %q does not name the spool", w.Failure())
	}
	fs.set(false)
	for sent := 0; next < 600; sent++ {
		send(1)
		if sent > 10000 {
			t.Fatal("appends do not recover once the directory takes writes again")
		}
	}
	waitFor(t, 20*time.Second, "the spool to drain", func() bool {
		sealed, open := w.spool.pending()
		return sealed == 0 && !open && w.Failure() == nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var n, distinct uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(node) FROM flows").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes refused during the outage; %d flows stored", failedWrites, n)
	if n != 600 || distinct != 600 {
		t.Fatalf("stored %d flows (%d distinct), want the 600 the writer took, once each", n, distinct)
	}
	if got := testutil.ToFloat64(metrics.StorageFailing); got != 0 {
		t.Errorf("flowwarden_storage_failing = %v after recovery", got)
	}
	if testutil.ToFloat64(metrics.SpoolErrors.WithLabelValues("seal")) == 0 || testutil.ToFloat64(metrics.SpoolErrors.WithLabelValues("append")) == 0 {
		t.Error("spool errors not counted")
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeTestSegment writes a sealed segment of records of 10 flows each
// through the spool and returns its path and the flows.
func writeTestSegment(t *testing.T, records int) (string, []schema.Flow) {
	t.Helper()
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<30, true, 1<<20, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var all []schema.Flow
	for r := range records {
		var chunk []schema.Flow
		for i := range 10 {
			chunk = append(chunk, testFlow(r*10+i))
		}
		if err := s.append(chunk); err != nil {
			t.Fatal(err)
		}
		all = append(all, chunk...)
	}
	if err := s.seal(0); err != nil {
		t.Fatal(err)
	}
	if len(s.closed) != 1 {
		t.Fatalf("%d segments", len(s.closed))
	}
	return filepath.Join(dir, s.closed[0]), all
}

// recordOffsets finds where each record starts in a segment.
func recordOffsets(raw []byte) []int {
	var out []int
	for pos := len(segmentMagic); pos < len(raw); {
		i := bytes.Index(raw[pos:], []byte(recordMarker))
		if i < 0 {
			break
		}
		out = append(out, pos+i)
		pos += i + 1
	}
	return out
}

// TestSpoolChecksums: a corrupted record, a corrupted length, a torn tail
// are each detected and skipped, never decoded into flows; the records
// around them survive.
func TestSpoolChecksums(t *testing.T) {
	path, all := writeTestSegment(t, 5)
	clean, dmg, err := readSegment(path)
	if err != nil || dmg != (segmentDamage{}) || len(clean) != 50 {
		t.Fatalf("clean segment: %d flows, %+v, %v", len(clean), dmg, err)
	}
	raw, _ := os.ReadFile(path)
	offs := recordOffsets(raw)
	if len(offs) != 5 {
		t.Fatalf("%d records found", len(offs))
	}
	for _, tc := range []struct {
		name    string
		damage  func([]byte) []byte
		want    []schema.Flow
		wantDmg segmentDamage
	}{
		{"one payload byte flipped", func(b []byte) []byte { b[offs[1]+recordHeader+20] ^= 0x40; return b },
			append(append([]schema.Flow{}, all[:10]...), all[20:]...), segmentDamage{Corrupt: 1}},
		{"length field corrupted", func(b []byte) []byte { b[offs[2]+len(recordMarker)+1] ^= 0x7f; return b },
			append(append([]schema.Flow{}, all[:20]...), all[30:]...), segmentDamage{Corrupt: 1}},
		{"marker corrupted", func(b []byte) []byte { b[offs[3]] = 'X'; return b },
			append(append([]schema.Flow{}, all[:30]...), all[40:]...), segmentDamage{Corrupt: 1}},
		{"torn last record", func(b []byte) []byte { return b[:offs[4]+recordHeader+7] },
			all[:40], segmentDamage{TornBytes: recordHeader + 7}},
		{"checksum corrupted and a torn tail", func(b []byte) []byte { b[offs[0]+len(recordMarker)+5] ^= 1; return b[:len(b)-3] },
			all[10:40], segmentDamage{Corrupt: 1, TornBytes: len(raw) - 3 - offs[4]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			damaged := filepath.Join(t.TempDir(), "x.seg")
			if err := os.WriteFile(damaged, tc.damage(append([]byte(nil), raw...)), 0o600); err != nil {
				t.Fatal(err)
			}
			got, dmg, err := readSegment(damaged)
			if err != nil {
				t.Fatal(err)
			}
			if dmg != tc.wantDmg {
				t.Errorf("damage %+v, want %+v", dmg, tc.wantDmg)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d flows read, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i].Node != tc.want[i].Node || !got[i].Time.Equal(tc.want[i].Time) {
					t.Fatalf("flow %d is %s, want %s", i, got[i].Node, tc.want[i].Node)
				}
			}
		})
	}
}

// TestSpoolReadsSegmentsFromBeforeChecksums: a segment in the old format
// (one gob stream) is still read, and marked as such.
func TestSpoolReadsSegmentsFromBeforeChecksums(t *testing.T) {
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	var want []schema.Flow
	for r := range 3 {
		chunk := []schema.Flow{testFlow(2 * r), testFlow(2*r + 1)}
		if err := enc.Encode(chunk); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
	}
	path := filepath.Join(t.TempDir(), "00000000000000000001-abcd.seg")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, dmg, err := readSegment(path)
	if err != nil || !dmg.Legacy || len(got) != len(want) {
		t.Fatalf("old segment: %d flows, %+v, %v", len(got), dmg, err)
	}
	// Cut short, it keeps the whole chunks and says where it stopped.
	if err := os.WriteFile(path, buf.Bytes()[:buf.Len()-5], 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, err = readSegment(path)
	if err == nil || len(got) != 4 {
		t.Fatalf("old segment cut short: %d flows, %v", len(got), err)
	}
}

// TestSpoolDamagedSegmentIsCountedAndRestInserted: through the writer, a
// segment with a corrupt record stores the other records, counts the
// damage, and never inserts the corrupt one.
func TestSpoolDamagedSegmentIsCountedAndRestInserted(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	path, _ := writeTestSegment(t, 4)
	raw, _ := os.ReadFile(path)
	offs := recordOffsets(raw)
	raw[offs[2]+recordHeader+30] ^= 0xff
	spoolDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(spoolDir, filepath.Base(path)), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultWriterConfig()
	cfg.SpoolDir = spoolDir
	metrics := NewWriterMetrics(nil)
	w, err := NewWriter(cfg, dsn, metrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Open(); err != nil { // the test reads w.spool below
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	waitFor(t, 20*time.Second, "the segment to be inserted", func() bool { s, _ := w.spool.pending(); return s == 0 })
	stop()
	<-done
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM flows").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 30 {
		t.Fatalf("stored %d flows, want the 30 of the three whole records", n)
	}
	if got := testutil.ToFloat64(metrics.SpoolDamaged.WithLabelValues("corrupt")); got != 1 {
		t.Fatalf("flowwarden_spool_damaged_records_total{kind=corrupt} = %v, want 1", got)
	}
}

// TestInsertPermanentErrorIsNotRetried: ClickHouse refusing the rows for
// good (here: a constraint the flows violate) ends the retries at once;
// the spool segment is set aside, counted, and the failure reported until
// an insert succeeds. A connection error is transient.
func TestInsertPermanentErrorIsNotRetried(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migratedDB(t)
	for _, q := range []string{"CREATE TABLE wrong AS flows", "ALTER TABLE wrong ADD CONSTRAINT no_http CHECK dst_port != 80"} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultWriterConfig()
	cfg.SpoolDir = t.TempDir()
	cfg.Table = "wrong"
	cfg.FlushInterval = 50 * time.Millisecond
	metrics := NewWriterMetrics(nil)
	w, err := NewWriter(cfg, dsn, metrics, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1})))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	if err := w.Write(ctx, testFlow(1), testFlow(2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the segment to be set aside", func() bool { return testutil.ToFloat64(metrics.Rejected) == 2 })
	if w.Failure() == nil {
		t.Error("no failure reported after ClickHouse refused the flows")
	}
	if errs := testutil.ToFloat64(metrics.InsertErrors); errs != 1 {
		t.Errorf("%v insert attempts failed; a permanent error must not be retried", errs)
	}
	stop()
	<-done
	aside, _ := filepath.Glob(filepath.Join(cfg.SpoolDir, rejectedDir, "*"+segmentSuffix))
	if len(aside) != 1 {
		t.Fatalf("%d segments set aside, want 1", len(aside))
	}
	if flows, _, err := readSegment(aside[0]); err != nil || len(flows) != 2 {
		t.Fatalf("the set-aside segment holds %d flows (%v)", len(flows), err)
	}

	// A server that does not answer is an outage, retried.
	w2, err := NewWriter(WriterConfig{MaxBackoff: 50 * time.Millisecond}, "clickhouse://127.0.0.1:1/x", nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	cols := newColumns()
	f := testFlow(1)
	cols.add(&f)
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = w2.insertWithRetry(tctx, new(*chgo.Client), cols)
	var perm *PermanentError
	if err == nil || errors.As(err, &perm) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connection refused: %v; want retries until the context ends", err)
	}
}
