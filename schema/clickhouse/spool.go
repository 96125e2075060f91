package clickhouse

import (
	"bufio"
	"crypto/rand"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// spool is the writer's on-disk buffer for when ClickHouse is unreachable or
// slow: append-only segment files of gob-encoded flow chunks, each segment
// at most one batch, replayed oldest first. A segment is inserted with a
// deduplication token derived from its name, so a segment replayed twice
// (a crash between insert and delete) is not stored twice.
type spool struct {
	dir      string
	maxBytes int64
	fsync    bool
	maxRows  int
	log      *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	seq      uint64
	cur      *os.File
	curBuf   *bufio.Writer
	curEnc   *gob.Encoder
	curRows  int
	curStart time.Time
	bytes    int64 // bytes in all segments
	closed   []string
	claimed  map[string]bool
	maxTime  time.Time // newest flow time spooled
	run      string    // this process's ID
}

// randomID names one opening of the spool: segment names, and so their
// deduplication tokens, never repeat those of an earlier opening, even in
// the same process (the spool's sequence starts again when it is empty).
func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

const segmentSuffix = ".seg"

func openSpool(dir string, maxBytes int64, fsync bool, maxRows int, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, fsync: fsync, maxRows: maxRows, log: log, run: randomID()}
	s.cond = sync.NewCond(&s.mu)
	// Segments left open by a crash are sealed and replayed like the others.
	if matches, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix+".open")); len(matches) > 0 {
		for _, m := range matches {
			_ = os.Rename(m, strings.TrimSuffix(m, ".open"))
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		var n uint64
		if _, err := fmt.Sscanf(name, "%020d-", &n); err != nil {
			continue
		}
		if info, err := e.Info(); err == nil {
			s.bytes += info.Size()
		}
		s.closed = append(s.closed, name)
		s.seq = max(s.seq, n)
	}
	sort.Strings(s.closed)
	for _, name := range s.closed {
		flows, _ := readSegment(filepath.Join(dir, name))
		for i := range flows {
			if flows[i].Time.After(s.maxTime) {
				s.maxTime = flows[i].Time
			}
		}
	}
	if len(s.closed) > 0 {
		log.Info("spool holds flows from before; replaying them", "segments", len(s.closed), "bytes", s.bytes)
	}
	return s, nil
}

// append writes flows to the open segment, blocking while the spool is at
// its size cap.
func (s *spool) append(flows []schema.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.bytes >= s.maxBytes {
		s.cond.Wait()
	}
	for len(flows) > 0 {
		if s.cur == nil {
			if err := s.openLocked(); err != nil {
				return err
			}
		}
		n := min(len(flows), s.maxRows-s.curRows)
		if err := s.curEnc.Encode(flows[:n]); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := s.curBuf.Flush(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if s.fsync {
			if err := s.cur.Sync(); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
		}
		for i := range flows[:n] {
			if flows[i].Time.After(s.maxTime) {
				s.maxTime = flows[i].Time
			}
		}
		s.curRows += n
		flows = flows[n:]
		if s.curRows >= s.maxRows {
			if err := s.closeLocked(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *spool) openLocked() error {
	s.seq++
	// The run ID makes every segment name, and so its deduplication
	// token, unique across restarts.
	name := fmt.Sprintf("%020d-%s%s", s.seq, s.run, segmentSuffix)
	f, err := os.OpenFile(filepath.Join(s.dir, name+".open"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.cur, s.curBuf = f, bufio.NewWriterSize(f, 1<<20)
	s.curEnc = gob.NewEncoder(s.curBuf)
	s.curRows, s.curStart = 0, time.Now()
	return nil
}

// closeLocked seals the open segment so the drainer may take it.
func (s *spool) closeLocked() error {
	if s.cur == nil {
		return nil
	}
	open := s.cur.Name()
	info, _ := s.cur.Stat()
	if err := s.cur.Close(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	final := strings.TrimSuffix(open, ".open")
	if err := os.Rename(open, final); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if info != nil {
		s.bytes += info.Size()
	}
	s.closed = append(s.closed, filepath.Base(final))
	s.cur = nil
	return nil
}

// seal closes the open segment if it is older than age (or any age when age is 0).
func (s *spool) seal(age time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && time.Since(s.curStart) >= age {
		return s.closeLocked()
	}
	return nil
}

// claim returns the oldest sealed segment no drainer holds, or "".
func (s *spool) claim() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed == nil {
		s.claimed = map[string]bool{}
	}
	for _, name := range s.closed {
		if !s.claimed[name] {
			s.claimed[name] = true
			return name
		}
	}
	return ""
}

func (s *spool) unclaim(name string) {
	s.mu.Lock()
	delete(s.claimed, name)
	s.mu.Unlock()
}

// pending counts sealed segments and reports whether one is open.
func (s *spool) pending() (sealed int, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.closed), s.cur != nil
}

// remove deletes a replayed segment.
func (s *spool) remove(name string) error {
	path := filepath.Join(s.dir, name)
	info, _ := os.Stat(path)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range s.closed {
		if n == name {
			s.closed = append(s.closed[:i], s.closed[i+1:]...)
			break
		}
	}
	delete(s.claimed, name)
	if info != nil {
		s.bytes -= info.Size()
	}
	s.cond.Broadcast()
	return nil
}

// readSegment decodes a segment; a torn tail (a crash mid-write) ends it.
func readSegment(path string) ([]schema.Flow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := gob.NewDecoder(bufio.NewReaderSize(f, 1<<20))
	var out []schema.Flow
	for {
		var chunk []schema.Flow
		err := dec.Decode(&chunk)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("segment %s cut short after %d flows: %w", filepath.Base(path), len(out), err)
		}
		out = append(out, chunk...)
	}
}

// newestTime is the newest flow time in the spool.
func (s *spool) newestTime() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxTime
}

// flowsAt returns the spooled flows whose time is exactly t (startup only:
// it reads every segment).
func (s *spool) flowsAt(t time.Time) []schema.Flow {
	s.mu.Lock()
	names := append([]string(nil), s.closed...)
	s.mu.Unlock()
	var out []schema.Flow
	for _, n := range names {
		flows, _ := readSegment(filepath.Join(s.dir, n))
		for _, f := range flows {
			if f.Time.Equal(t) {
				out = append(out, f)
			}
		}
	}
	return out
}
