package envoy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

// Follow reads an access log like `tail -F`: from its current end (or the
// start, with fromStart), on and on, reopening it when it is rotated
// (renamed or recreated) or truncated, until ctx ends. Lines are parsed as
// ReadLines does.
func Follow(ctx context.Context, path string, fromStart bool, poll time.Duration, enrich Enricher, sink ingest.Sink, stats *ingest.Stats) error {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	var (
		f       *os.File
		ino     uint64
		pending []byte // a partial last line
		buf     = make([]byte, 64<<10)
		p       Parser
		lineNo  int
	)
	open := func(seekEnd bool) error {
		nf, err := os.Open(path)
		if err != nil {
			return err
		}
		st, err := nf.Stat()
		if err != nil {
			nf.Close()
			return err
		}
		if seekEnd {
			if _, err := nf.Seek(0, io.SeekEnd); err != nil {
				nf.Close()
				return err
			}
		}
		if f != nil {
			f.Close()
		}
		f, pending = nf, pending[:0]
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			ino = sys.Ino
		}
		return nil
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if err := open(!fromStart); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("follow %s: %w", path, err)
	}
	batch := make([]schema.Flow, 0, 256)
	deliver := func() error {
		err := ingest.Deliver(ctx, sink, stats, batch...)
		batch = batch[:0]
		return err
	}
	emit := func(line []byte) error {
		lineNo++
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			return nil
		}
		stats.Read()
		if len(line) > MaxLineBytes {
			stats.Reject("line too long", fmt.Sprintf("%s:%d", path, lineNo))
			return nil
		}
		a, err := p.Parse(line)
		if err != nil {
			stats.Reject(RejectReason(err), fmt.Sprintf("%s:%d: %v", path, lineNo, err))
			return nil
		}
		fl := ToFlow(&a)
		if enrich != nil {
			enrich.Enrich(&fl)
		}
		batch = append(batch, fl)
		if len(batch) == cap(batch) {
			return deliver()
		}
		return nil
	}
	// drain reads the open file to its current end, or until ctx ends (a
	// log written faster than it is read has no end to reach), passing on
	// the flows of each chunk read in one write.
	drain := func() error {
		if f == nil {
			return nil
		}
		for ctx.Err() == nil {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				if err := emit(pending[:i]); err != nil {
					return err
				}
				pending = pending[i+1:]
			}
			if len(pending) > MaxLineBytes {
				if err := emit(pending); err != nil {
					return err
				}
				pending = pending[:0]
			}
			if err := deliver(); err != nil {
				return err
			}
			if n == 0 || err != nil {
				return nil
			}
		}
		return nil
	}
	for {
		if err := drain(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
		// Rotated (a new file at the path) or truncated: start over on it.
		st, err := os.Stat(path)
		switch {
		case err != nil:
			continue // between rename and create
		case f == nil:
			_ = open(false)
		default:
			sys, _ := st.Sys().(*syscall.Stat_t)
			pos, _ := f.Seek(0, io.SeekCurrent)
			if sys != nil && sys.Ino != ino || st.Size() < pos {
				// What the writer added to the old file before it moved on
				// is read first; then the new (or truncated) file from its start.
				if sys != nil && sys.Ino != ino {
					if err := drain(); err != nil {
						return err
					}
				}
				if err := open(false); err != nil {
					continue
				}
			}
		}
	}
}
