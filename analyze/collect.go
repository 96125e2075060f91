package analyze

import (
	"sort"
	"sync"

	"github.com/flowwarden/flowwarden/schema"
)

// Collector keeps the latest state of every finding it is given, for
// offline runs and tests. It is safe for concurrent use.
type Collector struct {
	mu   sync.Mutex
	last map[[2]string]schema.Finding // (ID, start) → latest
}

// Finding implements FindingSink.
func (c *Collector) Finding(f schema.Finding) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[[2]string]schema.Finding{}
	}
	c.last[[2]string{f.ID, f.Start.String()}] = f
}

// Findings returns the findings sorted by start, detector and subject.
func (c *Collector) Findings() []schema.Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]schema.Finding, 0, len(c.last))
	for _, f := range c.last {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		if a.Detector != b.Detector {
			return a.Detector < b.Detector
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Workload+a.Peer < b.Workload+b.Peer
	})
	return out
}
