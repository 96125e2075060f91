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

// FollowConfig says which access log a Follower reads, where it starts and
// how often it looks again.
type FollowConfig struct {
	// Path is the file followed.
	Path string
	// FromStart reads a file with no kept position from its start (else
	// from its end, as `tail -F` does).
	FromStart bool
	// Poll is how often the file is checked for new lines and rotation
	// (default 250ms).
	Poll time.Duration
	// Positions, when set, keeps how far the file was read: a follower
	// started again goes on from there (or from the start of the file, if
	// it was rotated or truncated meanwhile), so lines written while it was
	// stopped are read.
	Positions *Positions
	// Window bounds the flows' times around this host's clock (the zero
	// value: at most ingest.DefaultMaxSkew in the future).
	Window ingest.TimeWindow
}

// Follower reads an access log like `tail -F`: on and on, reopening it
// when it is rotated (renamed or recreated) or truncated. Lines are parsed
// as ReadLines does; the flows of each chunk read reach the sink in one
// write. Identities come from the sink (ingest.Enrich), not the follower.
type Follower struct {
	cfg   FollowConfig
	sink  ingest.Sink
	stats *ingest.Stats
}

// NewFollower returns a follower of cfg.Path that writes its flows to sink
// and counts its lines in stats (nil: not counted). It does no I/O until
// Run.
func NewFollower(cfg FollowConfig, sink ingest.Sink, stats *ingest.Stats) (*Follower, error) {
	if cfg.Path == "" {
		return nil, errors.New("envoy follower: no file")
	}
	if sink == nil {
		return nil, fmt.Errorf("envoy follower %s: no sink", cfg.Path)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if stats == nil {
		stats = &ingest.Stats{}
	}
	return &Follower{cfg: cfg, sink: sink, stats: stats}, nil
}

// Run follows the file until ctx ends, then saves how far it was read (with
// Positions) and returns. A file that does not exist yet is waited for.
func (fo *Follower) Run(ctx context.Context) (err error) {
	path, cfg, sink, stats := fo.cfg.Path, fo.cfg, fo.sink, fo.stats
	var (
		f       *os.File
		ino     uint64
		offset  int64  // of the next byte read from f
		pending []byte // a partial last line
		buf     = make([]byte, 64<<10)
		p       Parser
		lineNo  int
	)
	// open opens the file at path and seeks to at (-1: its end).
	open := func(at int64) error {
		nf, err := os.Open(path)
		if err != nil {
			return err
		}
		st, err := nf.Stat()
		if err != nil {
			nf.Close()
			return err
		}
		if at < 0 {
			at = st.Size()
		}
		if _, err := nf.Seek(at, io.SeekStart); err != nil {
			nf.Close()
			return err
		}
		if f != nil {
			f.Close()
		}
		f, pending, offset = nf, pending[:0], at
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			ino = sys.Ino
		}
		cfg.Positions.Set(path, Position{Inode: ino, Offset: offset})
		return nil
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	start := int64(-1)
	if cfg.FromStart {
		start = 0
	}
	if kept, ok := cfg.Positions.Get(path); ok {
		start = 0 // rotated or truncated while stopped: all of it is unread
		if st, err := os.Stat(path); err == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Ino == kept.Inode && st.Size() >= kept.Offset {
				start = kept.Offset
			}
		}
	}
	if err := open(start); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("follow %s: %w", path, err)
	} else if err == nil && start < 0 {
		// Where following began is kept at once: a serve that dies before
		// its first save then reads what came after that, not from a later end.
		if err := cfg.Positions.Save(); err != nil {
			return fmt.Errorf("follow %s: %w", path, err)
		}
	}
	defer func() {
		if serr := cfg.Positions.Save(); serr != nil && err == nil {
			err = fmt.Errorf("follow %s: %w", path, serr)
		}
	}()
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
		if err == nil {
			err = cfg.Window.Check(a.StartTime)
		}
		if err != nil {
			stats.Reject(RejectReason(err), fmt.Sprintf("%s:%d: %v", path, lineNo, err))
			return nil
		}
		batch = append(batch, ToFlow(&a))
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
			offset += int64(n)
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
			cfg.Positions.Set(path, Position{Inode: ino, Offset: offset - int64(len(pending))})
			if n == 0 || err != nil {
				return nil
			}
		}
		return nil
	}
	saved := time.Now()
	for {
		if err := drain(); err != nil {
			return err
		}
		if time.Since(saved) >= time.Second {
			if err := cfg.Positions.Save(); err != nil {
				return fmt.Errorf("follow %s: %w", path, err)
			}
			saved = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.Poll):
		}
		// Rotated (a new file at the path) or truncated: start over on it.
		st, err := os.Stat(path)
		switch {
		case err != nil:
			continue // between rename and create
		case f == nil:
			_ = open(0)
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
				if err := open(0); err != nil {
					continue
				}
			}
		}
	}
}
