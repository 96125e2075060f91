package ingest

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// IdentityCache maps pod IPs to the endpoints Hubble reported for them
// (namespace, pod, labels, workload), so that sources that see only
// addresses (Envoy, conntrack) can be attributed. Entries expire: an IP is
// trusted only within TTL of the flow time it was learned at, since pod IPs
// are reused. It is safe for concurrent use, and a Sink that learns.
type IdentityCache struct {
	ttl time.Duration
	max int

	mu sync.RWMutex
	m  map[netip.Addr]identity
}

type identity struct {
	ep   schema.Endpoint
	seen time.Time
}

// NewIdentityCache returns a cache; ttl 0 means 10 minutes, max 0 means 100,000 addresses.
func NewIdentityCache(ttl time.Duration, max int) *IdentityCache {
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	if max <= 0 {
		max = 100000
	}
	return &IdentityCache{ttl: ttl, max: max, m: map[netip.Addr]identity{}}
}

// Write learns from flows (it implements Sink), under one lock for the
// whole batch.
func (c *IdentityCache) Write(_ context.Context, flows ...schema.Flow) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range flows {
		c.learnLocked(&flows[i])
	}
	return nil
}

// Learn records the pod endpoints of a flow.
func (c *IdentityCache) Learn(f *schema.Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.learnLocked(f)
}

func (c *IdentityCache) learnLocked(f *schema.Flow) {
	for _, side := range []struct {
		ep *schema.Endpoint
		ip netip.Addr
	}{{&f.Src, f.SrcIP}, {&f.Dst, f.DstIP}} {
		if side.ep.Pod == "" || side.ep.Namespace == "" || !side.ip.IsValid() {
			continue
		}
		if old, ok := c.m[side.ip]; ok && old.seen.After(f.Time) {
			continue
		}
		if len(c.m) >= c.max {
			c.makeRoom(f.Time)
		}
		c.m[side.ip] = identity{ep: *side.ep, seen: f.Time}
	}
}

// makeRoom frees at least one entry: every entry that expired by now (Enrich
// would ignore them), else the oldest. Dropping all the expired ones in the
// same pass keeps a full cache from scanning every address again for each
// new pod: in steady churn most entries have expired.
func (c *IdentityCache) makeRoom(now time.Time) {
	var oldest netip.Addr
	var t time.Time
	freed := false
	for a, id := range c.m {
		if now.Sub(id.seen) > c.ttl {
			delete(c.m, a)
			freed = true
			continue
		}
		if t.IsZero() || id.seen.Before(t) {
			oldest, t = a, id.seen
		}
	}
	if !freed {
		delete(c.m, oldest)
	}
}

// Enrich fills a flow's endpoints that carry no identity from the cache.
func (c *IdentityCache) Enrich(f *schema.Flow) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, side := range []struct {
		ep *schema.Endpoint
		ip netip.Addr
	}{{&f.Src, f.SrcIP}, {&f.Dst, f.DstIP}} {
		if side.ep.Namespace != "" {
			continue
		}
		id, ok := c.m[side.ip]
		if !ok {
			continue
		}
		if d := f.Time.Sub(id.seen); d > c.ttl || d < -c.ttl {
			continue
		}
		*side.ep = id.ep
	}
}

// Len is the number of addresses known.
func (c *IdentityCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// Enricher fills a flow's endpoints from what it knows (IdentityCache does).
type Enricher interface {
	Enrich(f *schema.Flow)
}

// Enrich is a Sink that attributes flows before next sees them: every
// endpoint that carries no identity is filled from e. The flows are
// enriched in place (the caller's slice), as a source that enriched them
// itself would.
func Enrich(e Enricher, next Sink) Sink {
	return SinkFunc(func(ctx context.Context, flows ...schema.Flow) error {
		for i := range flows {
			e.Enrich(&flows[i])
		}
		return next.Write(ctx, flows...)
	})
}
