package clickhouse

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// spool is the writer's on-disk buffer for when ClickHouse is unreachable or
// slow: append-only segment files of flow chunks, each segment at most one
// batch, replayed oldest first. A segment is inserted with a deduplication
// token derived from its name, so a segment replayed twice (a crash between
// insert and delete) is not stored twice.
//
// A segment starts with segmentMagic; each append is one record: a marker,
// the payload's length and CRC-32C, and the payload (the chunk, encoded on
// its own by appendFlows so that a damaged record can be skipped without
// losing the records after it). Segments of earlier versions (records with
// gob payloads, segmentMagicGob; records without DNSQType, segmentMagicV3;
// labels inline in every endpoint, segmentMagicV4; or, before checksums, a
// bare gob stream) are still read.
//
// A failed write, seal or directory sync never leaves the spool stuck: the
// segment being written is set aside (cut back to its last whole record)
// and sealed as soon as the directory accepts it, the next append opens a
// new one, and the failure is reported by failure() until it clears.
type spool struct {
	dir      string
	maxBytes int64
	fsync    bool
	maxRows  int
	log      *slog.Logger
	fs       spoolFS

	mu       sync.Mutex
	cond     *sync.Cond
	seq      uint64
	cur      spoolFile
	curPath  string
	curSize  int64 // bytes of whole records in cur
	curRows  int
	curStart time.Time
	unsealed []string // closed segments (".open" paths) still to be renamed
	inserted []string // segments inserted whose deletion failed, to delete
	dirDirty bool     // a create or rename not yet synced to the directory
	bytes    int64    // bytes in all segments
	closed   []string
	claimed  map[string]bool
	maxTime  time.Time // newest flow time spooled
	run      string    // this process's ID
	rec      []byte    // the record being written

	appendErr error // the last append's failure, nil once one succeeds
	sealErr   error // the last seal's failure, nil once every segment is sealed
	removeErr error // the last deletion's failure, nil once every inserted segment is deleted
	onError   func(op string)
}

// spoolFile and spoolFS are the file operations the spool needs, so tests
// can make them fail as a full or read-only disk does.
type spoolFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

type spoolFS interface {
	Create(path string) (spoolFile, error)
	Rename(from, to string) error
	SyncDir(dir string) error
}

type osFS struct{}

func (osFS) Create(path string) (spoolFile, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
}
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// randomID names one opening of the spool: segment names, and so their
// deduplication tokens, never repeat those of an earlier opening, even in
// the same process (the spool's sequence starts again when it is empty).
func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

const (
	segmentSuffix = ".seg"
	// segmentMagic opens every segment written now: checksummed records
	// whose payload is appendFlows' encoding.
	segmentMagic = "FWSPOOL5"
	// segmentMagicV4 opened segments whose endpoints carry their labels
	// inline, not once per record; they are still read.
	segmentMagicV4 = "FWSPOOL4"
	// segmentMagicV3 opened segments whose records end before DNSQType
	// (and carry labels inline); they are still read.
	segmentMagicV3 = "FWSPOOL3"
	// segmentMagicGob opened the checksummed segments of earlier versions,
	// whose record payloads were gob streams; they are still read.
	segmentMagicGob = "FWSPOOL2"
	// recordMarker opens every record, so that reading can find the next
	// record after a damaged one.
	recordMarker = "FWR\x01"
	recordHeader = len(recordMarker) + 8 // marker, length, CRC-32C
	// maxRecord bounds a record's length: a larger one is damage.
	maxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func openSpool(dir string, maxBytes int64, fsync bool, maxRows int, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, fsync: fsync, maxRows: maxRows, log: log, run: randomID(), fs: osFS{}}
	s.cond = sync.NewCond(&s.mu)
	// Segments left open by a crash are sealed and replayed like the others.
	if matches, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix+".open")); len(matches) > 0 {
		for _, m := range matches {
			if err := os.Rename(m, strings.TrimSuffix(m, ".open")); err != nil {
				return nil, fmt.Errorf("spool: sealing a segment left open: %w", err)
			}
		}
		if err := s.fs.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
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
		flows, _, _ := readSegment(filepath.Join(dir, name))
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

// failure is what stops the spool from taking or handing over flows right
// now (nil when nothing does).
func (s *spool) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.appendErr != nil {
		errs = append(errs, fmt.Errorf("spool append failing: %w", s.appendErr))
	}
	if s.sealErr != nil {
		errs = append(errs, fmt.Errorf("spool seal failing (%d segments wait): %w", len(s.unsealed), s.sealErr))
	}
	if s.removeErr != nil {
		errs = append(errs, fmt.Errorf("spool cannot delete inserted segments (%d wait): %w", len(s.inserted), s.removeErr))
	}
	return errors.Join(errs...)
}

func (s *spool) failed(op string) {
	if s.onError != nil {
		s.onError(op)
	}
}

// append writes flows to the open segment, blocking while the spool is at
// its size cap. When it fails, none of flows is in the spool: the caller
// may hand them over again.
func (s *spool) append(flows []schema.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.bytes >= s.maxBytes {
		s.cond.Wait()
	}
	wrote := false // some of flows are in the spool already
	for len(flows) > 0 {
		if s.cur == nil {
			if err := s.openLocked(); err != nil {
				s.appendErr = err
				s.failed("append")
				return err
			}
		}
		n := min(len(flows), s.maxRows-s.curRows)
		if err := s.writeRecordLocked(flows[:n]); err != nil {
			s.appendErr = err
			s.failed("append")
			if wrote {
				// Flows of this call went into a segment sealed before
				// the failure: rare (a call larger than a segment), and
				// the source would send them again. Say so.
				s.log.Warn("spool append failed after part of the flows were spooled; they may be stored twice", "flows", len(flows))
			}
			return err
		}
		wrote = true
		for i := range flows[:n] {
			if flows[i].Time.After(s.maxTime) {
				s.maxTime = flows[i].Time
			}
		}
		s.curRows += n
		flows = flows[n:]
		if s.curRows >= s.maxRows {
			if err := s.closeLocked(); err != nil {
				// The flows are in the closed segment, which is sealed
				// when the directory takes the rename: not an append failure.
				s.log.Error("sealing spool segment", "err", err)
			}
		}
	}
	s.appendErr = nil
	return nil
}

// writeRecordLocked appends one record to cur; on failure it cuts the
// segment back to its last whole record and sets it aside.
func (s *spool) writeRecordLocked(flows []schema.Flow) error {
	s.rec = append(s.rec[:0], recordMarker...)
	s.rec = append(s.rec, make([]byte, 8)...)
	s.rec = appendFlows(s.rec, flows)
	b := s.rec
	payload := b[recordHeader:]
	binary.LittleEndian.PutUint32(b[len(recordMarker):], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[len(recordMarker)+4:], crc32.Checksum(payload, castagnoli))
	_, err := s.cur.Write(b)
	if err == nil && s.fsync {
		err = s.cur.Sync()
	}
	if err == nil && s.dirDirty && s.fsync {
		// The segment's name must be durable before its records count as spooled.
		if err = s.fs.SyncDir(s.dir); err == nil {
			s.dirDirty = false
		}
	}
	if err != nil {
		s.abandonLocked()
		return fmt.Errorf("spool: writing %s: %w", filepath.Base(s.curPath), err)
	}
	s.curSize += int64(len(b))
	return nil
}

// abandonLocked gives up on the open segment after a failed write: it is
// cut back to its whole records and closed, and sealed like any other if
// it holds some (an empty one is sealed too: it inserts nothing).
func (s *spool) abandonLocked() {
	_ = s.cur.Truncate(s.curSize)
	if err := s.closeLocked(); err != nil {
		s.log.Error("sealing spool segment", "err", err)
	}
}

func (s *spool) openLocked() error {
	s.seq++
	// The run ID makes every segment name, and so its deduplication
	// token, unique across restarts.
	name := fmt.Sprintf("%020d-%s%s", s.seq, s.run, segmentSuffix)
	path := filepath.Join(s.dir, name+".open")
	f, err := s.fs.Create(path)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := io.WriteString(f, segmentMagic); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("spool: %w", err)
	}
	s.cur, s.curPath, s.curSize = f, path, int64(len(segmentMagic))
	s.curRows, s.curStart = 0, time.Now()
	s.dirDirty = true
	return nil
}

// closeLocked closes the open segment and seals it (and any earlier one
// whose seal failed) so the drainer may take it. A failure leaves the
// segment to be sealed by a later call; the next append opens a new one.
func (s *spool) closeLocked() error {
	if s.cur != nil {
		if err := s.cur.Close(); err != nil {
			// The descriptor is released whatever Close says; what was
			// written was synced record by record.
			s.log.Warn("closing spool segment", "segment", filepath.Base(s.curPath), "err", err)
		}
		s.bytes += s.curSize
		s.unsealed = append(s.unsealed, s.curPath)
		s.cur, s.curPath = nil, ""
	}
	return s.sealPendingLocked()
}

// sealPendingLocked renames the closed segments to their sealed names and
// syncs the directory.
func (s *spool) sealPendingLocked() error {
	for len(s.unsealed) > 0 {
		open := s.unsealed[0]
		final := strings.TrimSuffix(open, ".open")
		if err := s.fs.Rename(open, final); err != nil {
			s.sealErr = fmt.Errorf("spool: %w", err)
			s.failed("seal")
			return s.sealErr
		}
		s.unsealed = s.unsealed[1:]
		s.closed = append(s.closed, filepath.Base(final))
		s.dirDirty = true
	}
	if s.dirDirty && s.fsync {
		if err := s.fs.SyncDir(s.dir); err != nil {
			s.sealErr = fmt.Errorf("spool: syncing %s: %w", s.dir, err)
			s.failed("seal")
			return s.sealErr
		}
		s.dirDirty = false
	}
	if s.sealErr != nil {
		s.log.Info("spool segments sealed again")
	}
	s.sealErr = nil
	return nil
}

// seal closes the open segment if it is older than age (or any age when
// age is 0), and retries the seals and deletions that failed.
func (s *spool) seal(age time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeInsertedLocked()
	if s.cur != nil && time.Since(s.curStart) >= age {
		return s.closeLocked()
	}
	if len(s.unsealed) > 0 || s.sealErr != nil {
		return s.sealPendingLocked()
	}
	return nil
}

// removeInsertedLocked retries deleting the segments inserted already.
func (s *spool) removeInsertedLocked() {
	for len(s.inserted) > 0 {
		path := filepath.Join(s.dir, s.inserted[0])
		info, _ := os.Stat(path)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.removeErr = fmt.Errorf("spool: %w", err)
			return
		}
		if info != nil {
			s.bytes -= info.Size()
		}
		s.inserted = s.inserted[1:]
		s.cond.Broadcast()
	}
	s.removeErr = nil
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

// pending counts sealed segments and reports whether one is open (or
// waits to be sealed).
func (s *spool) pending() (sealed int, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.closed), s.cur != nil || len(s.unsealed) > 0
}

// remove deletes a replayed segment. When the deletion fails, the
// segment is not replayed again: it is deleted by a later seal.
func (s *spool) remove(name string) error {
	path := filepath.Join(s.dir, name)
	info, _ := os.Stat(path)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.forget(name, nil)
		s.mu.Lock()
		s.inserted = append(s.inserted, name)
		s.removeErr = fmt.Errorf("spool: %w", err)
		s.mu.Unlock()
		s.failed("remove")
		return s.removeErr
	}
	s.forget(name, info)
	return nil
}

// setAside moves a segment ClickHouse refused for good into the rejected
// directory, where it stays for the operator (see RUNBOOK.md).
func (s *spool) setAside(name string) (string, error) {
	dir := filepath.Join(s.dir, rejectedDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	path := filepath.Join(s.dir, name)
	info, _ := os.Stat(path)
	to := filepath.Join(dir, name)
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	if s.fsync {
		_ = s.fs.SyncDir(s.dir)
		_ = s.fs.SyncDir(dir)
	}
	s.forget(name, info)
	return to, nil
}

// rejectedDir, under the spool, holds the segments ClickHouse refused for good.
const rejectedDir = "rejected"

func (s *spool) forget(name string, info os.FileInfo) {
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
}

// segmentDamage is what reading a segment had to skip.
type segmentDamage struct {
	Corrupt   int  // records whose checksum or encoding was wrong, skipped
	TornBytes int  // bytes of an incomplete last record (a crash mid-write)
	Legacy    bool // a segment from before checksums
}

func (d segmentDamage) String() string {
	return fmt.Sprintf("%d corrupt records skipped, %d bytes of a torn last record", d.Corrupt, d.TornBytes)
}

// readSegment decodes a segment. Damaged records are skipped and counted,
// never returned; an error means the file could not be read at all (or, for
// a segment from before checksums, where its decoding stopped).
func readSegment(path string) ([]schema.Flow, segmentDamage, error) {
	var out []schema.Flow
	dmg, err := scanSegment(path, nil, func(n int) {
		out = slices.Grow(out, n)
	}, func(record []schema.Flow) {
		out = append(out, record...)
	})
	return out, dmg, err
}

// segmentBufs are the buffers segments are read into, reused: a segment is
// megabytes, and a fresh buffer is zeroed before it is filled.
var segmentBufs = sync.Pool{New: func() any { return new(segmentBuf) }}

type segmentBuf struct {
	raw    []byte
	record []schema.Flow
}

// scanSegment reads the segment at path and calls record with the flows of
// each record that decodes whole, in order; a record's slice is reused for
// the next one. total, if not nil, is first told how many flows the
// segment announces. buf, if not nil, holds reusable buffers.
func scanSegment(path string, buf *segmentBuf, total func(int), record func([]schema.Flow)) (segmentDamage, error) {
	var dmg segmentDamage
	if buf == nil {
		buf = new(segmentBuf)
	}
	raw, err := readFileInto(path, buf.raw[:0])
	buf.raw = raw
	if err != nil {
		return dmg, err
	}
	gobRecords := bytes.HasPrefix(raw, []byte(segmentMagicGob))
	v3 := bytes.HasPrefix(raw, []byte(segmentMagicV3))
	v4 := bytes.HasPrefix(raw, []byte(segmentMagicV4))
	if !gobRecords && !v3 && !v4 && !bytes.HasPrefix(raw, []byte(segmentMagic)) && !bytes.HasPrefix([]byte(segmentMagic), raw) {
		dmg.Legacy = true
		flows, err := readLegacySegment(raw)
		if err != nil {
			err = fmt.Errorf("segment %s (without checksums) cut short after %d flows: %w", filepath.Base(path), len(flows), err)
		}
		if total != nil {
			total(len(flows))
		}
		record(flows)
		return dmg, err
	}
	data := raw[min(len(raw), len(segmentMagic)):]
	if !gobRecords && total != nil {
		total(countFlows(data))
	}
	dec := flowDecoder{v3: v3, inlineLabels: v3 || v4}
	pos := 0
	for pos < len(data) {
		rest := data[pos:]
		ok := len(rest) >= recordHeader && string(rest[:len(recordMarker)]) == recordMarker
		var n int
		if ok {
			n = int(binary.LittleEndian.Uint32(rest[len(recordMarker):]))
			ok = n <= maxRecord && recordHeader+n <= len(rest) &&
				crc32.Checksum(rest[recordHeader:recordHeader+n], castagnoli) == binary.LittleEndian.Uint32(rest[len(recordMarker)+4:])
		}
		if ok {
			payload := rest[recordHeader : recordHeader+n]
			if gobRecords {
				var chunk []schema.Flow
				if err := gob.NewDecoder(bytes.NewReader(payload)).Decode(&chunk); err != nil {
					dmg.Corrupt++
				} else {
					record(chunk)
				}
			} else {
				flows, err := dec.decodeFlows(payload, buf.record[:0])
				buf.record = flows[:0]
				if err != nil {
					dmg.Corrupt++
				} else {
					record(flows)
				}
			}
			pos += recordHeader + n
			continue
		}
		// Damage: go on at the next marker. Without one, the rest is a
		// torn last record (or a damaged one; nothing after it survives).
		next := bytes.Index(rest[1:], []byte(recordMarker))
		if next < 0 {
			dmg.TornBytes = len(rest)
			break
		}
		dmg.Corrupt++
		pos += 1 + next
	}
	return dmg, nil
}

// readFileInto reads the file at path into buf, grown as needed.
func readFileInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		buf = slices.Grow(buf, int(fi.Size())+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 64<<10)
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// countFlows sums the flow counts that open the records of a segment's
// data, up to the first damaged one: the size of the slice to decode into
// (one allocation, not a doubling per record).
func countFlows(data []byte) int {
	n := 0
	for len(data) >= recordHeader && string(data[:len(recordMarker)]) == recordMarker {
		size := int(binary.LittleEndian.Uint32(data[len(recordMarker):]))
		if size > maxRecord || recordHeader+size > len(data) {
			break
		}
		payload := data[recordHeader : recordHeader+size]
		if c, k := binary.Uvarint(payload); k > 0 && c <= uint64(len(payload)) {
			n += int(c)
		}
		data = data[recordHeader+size:]
	}
	return n
}

// readLegacySegment decodes a segment written before records had
// checksums: one gob stream, which a torn tail ends.
func readLegacySegment(raw []byte) ([]schema.Flow, error) {
	dec := gob.NewDecoder(bytes.NewReader(raw))
	var out []schema.Flow
	for {
		var chunk []schema.Flow
		err := dec.Decode(&chunk)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
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
		flows, _, _ := readSegment(filepath.Join(s.dir, n))
		for _, f := range flows {
			if f.Time.Equal(t) {
				out = append(out, f)
			}
		}
	}
	return out
}
