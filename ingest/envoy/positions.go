package envoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/google/renameio/v2"
)

// PositionsFile is the name serve keeps the positions under, in its data
// directory.
const PositionsFile = "envoy-positions.json"

// Position is how far a followed file was read: the file (its inode) and
// the offset after the last line passed on.
type Position struct {
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// Positions keeps the read positions of followed access logs in a file, so
// that a restarted follower goes on where it stopped instead of skipping
// what was written meanwhile. A position is saved after its lines were
// passed on, at most a second later, so a crash can repeat up to a second
// of lines but loses none.
type Positions struct {
	file string

	mu    sync.Mutex
	files map[string]Position
	dirty bool
}

type positionsFile struct {
	Version int                 `json:"version"`
	Files   map[string]Position `json:"files"`
}

// OpenPositions reads the positions kept in file (none yet: empty).
func OpenPositions(file string) (*Positions, error) {
	p := &Positions{file: file, files: map[string]Position{}}
	raw, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("access-log positions: %w", err)
	}
	var pf positionsFile
	if err := json.Unmarshal(raw, &pf); err != nil || pf.Version != 1 {
		return nil, fmt.Errorf("access-log positions %s: not a version 1 positions file (%v); delete it to follow from the logs' ends", file, err)
	}
	for k, v := range pf.Files {
		p.files[k] = v
	}
	return p, nil
}

// Get returns the position kept for path; p may be nil.
func (p *Positions) Get(path string) (Position, bool) {
	if p == nil {
		return Position{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pos, ok := p.files[path]
	return pos, ok
}

// Set records path's position (saved by the next Save); p may be nil.
func (p *Positions) Set(path string, pos Position) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.files[path] != pos {
		p.files[path] = pos
		p.dirty = true
	}
}

// Save writes the positions if they changed, whole or not at all
// (temporary file, fsync, rename); p may be nil.
func (p *Positions) Save() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dirty {
		return nil
	}
	raw, err := json.MarshalIndent(positionsFile{Version: 1, Files: p.files}, "", "  ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(p.file, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("save access-log positions: %w", err)
	}
	p.dirty = false
	return nil
}
