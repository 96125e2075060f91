package hubble

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Shard is one replica's share of the Hubble flows (`serve --shard i/N`):
// the replicas 0..N-1 together subscribe to every flow exactly once, each
// through GetFlows filters that Hubble Relay applies server-side.
//
// A flow belongs to the namespace of the endpoint that opened its
// connection, as the detectors see it: the destination's for a reply
// (is_reply true) whose destination is in a known namespace, the source's
// otherwise (requests, flows whose direction Hubble does not know, and
// replies to endpoints without a namespace). Namespace ns belongs to shard
// 1 + FNV-1a-32(ns) mod (N-1). Shard 0 takes what no known namespace owns:
// flows opened by endpoints without a namespace (world, host, health,
// remote nodes), which no detector keys a workload on, and flows of
// namespaces not listed yet. Shard 0 owns no namespace: it takes the rest
// by a blacklist of the others' selections, which must then be positive
// conditions only, and a flow whose direction Hubble does not know
// (is_reply unset, not dropped: encapsulation trace points, unknown trace
// reasons), which the detectors count for its source (Cilium sets the
// deprecated reply flag false for it), matches neither reply:[true] nor
// reply:[false]. Taking it for its source's replica needs a filter without
// a reply condition, which also matches that namespace's replies to shard
// 0's namespaces, which shard 0's blacklist would then drop
// (TestShardSplitOfTheScenarios measures that alternative). So with N=2
// replica 1 takes all namespaced traffic; N-1 replicas split it.
type Shard struct {
	Index, Count int
}

// ParseShard reads "i/N" (0 <= i < N); "" is the single replica, 0/1. i
// may also be a StatefulSet pod's name, whose ordinal (the number after its
// last dash) it then is: "flowwarden-2/3" is 2/3, so that a StatefulSet sets
// FLOWWARDEN_SHARD to "$(POD_NAME)/N".
func ParseShard(s string) (Shard, error) {
	if s == "" {
		return Shard{Index: 0, Count: 1}, nil
	}
	a, b, ok := strings.Cut(s, "/")
	a = strings.TrimSpace(a)
	if k := strings.LastIndexByte(a, '-'); k > 0 && k < len(a)-1 {
		a = a[k+1:] // a pod name's ordinal
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil {
		return Shard{}, fmt.Errorf("shard %q: want i/N, as 0/3 (replica i of N), or POD-NAME/N (i: the StatefulSet ordinal)", s)
	}
	if n < 1 {
		return Shard{}, fmt.Errorf("shard %q: N must be at least 1", s)
	}
	if i < 0 || i >= n {
		return Shard{}, fmt.Errorf("shard %q: i must be between 0 and %d (replicas are numbered from 0)", s, n-1)
	}
	return Shard{Index: i, Count: n}, nil
}

// String is "i/N".
func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Sharded reports whether this replica takes less than every flow.
func (s Shard) Sharded() bool { return s.Count > 1 }

// ShardOf is the shard that owns namespace ns among n: 0 for "" (and for
// everything when n is 1), else 1 + FNV-1a-32(ns) mod (n-1).
func ShardOf(ns string, n int) int {
	if n <= 1 || ns == "" {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	return 1 + int(h.Sum32()%uint32(n-1))
}

// Owns reports whether this shard owns the flows keyed by namespace ns (the
// opening endpoint's namespace, "" for none): for the resume point, over
// stored flows.
func (s Shard) Owns(ns string) bool { return !s.Sharded() || ShardOf(ns, s.Count) == s.Index }

// Filters are the GetFlows whitelist and blacklist that select this shard's
// flows, given the namespaces known to exist. ok is false when the shard
// selects nothing (it owns none of the known namespaces): the caller must
// not subscribe then, since an empty whitelist selects everything. The
// single replica (N=1) has no filter.
func (s Shard) Filters(known []string) (whitelist, blacklist []*flowpb.FlowFilter, ok bool) {
	return s.filters(known, nil)
}

// filters is Filters where a namespace that is not settled yet (just
// listed) is taken by its owner but not yet given up by the others, so that
// the handover of a new namespace overlaps (its flows are taken twice for a
// while) rather than leaves a gap: the replicas list the namespaces each on
// its own clock. settled nil: all are.
func (s Shard) filters(known []string, settled func(ns string) bool) (whitelist, blacklist []*flowpb.FlowFilter, ok bool) {
	if !s.Sharded() {
		return nil, nil, true
	}
	known = slices.Clone(known)
	slices.Sort(known)
	known = slices.Compact(known)
	known = slices.DeleteFunc(known, func(ns string) bool { return ns == "" })
	pods := func(nss []string) []string {
		out := make([]string, len(nss))
		for i, ns := range nss {
			out[i] = ns + "/" // every pod of ns
		}
		return out
	}
	given := known // the namespaces the others take, given up here
	if settled != nil {
		given = slices.DeleteFunc(slices.Clone(known), func(ns string) bool { return !settled(ns) })
	}
	if s.Index == 0 {
		if len(given) == 0 {
			return nil, nil, true
		}
		all := pods(given)
		return nil, []*flowpb.FlowFilter{
			{SourcePod: all},
			{DestinationPod: all, Reply: []bool{true}},
		}, true
	}
	var mine, others []string
	for _, ns := range known {
		if ShardOf(ns, s.Count) == s.Index {
			mine = append(mine, ns)
		}
	}
	for _, ns := range given {
		if ShardOf(ns, s.Count) != s.Index {
			others = append(others, ns)
		}
	}
	if len(mine) == 0 {
		return nil, nil, false
	}
	whitelist = []*flowpb.FlowFilter{
		{SourcePod: pods(mine)},
		{DestinationPod: pods(mine), Reply: []bool{true}},
	}
	if len(others) > 0 {
		// A reply from one of ours to a known namespace of another shard
		// belongs to that shard.
		blacklist = []*flowpb.FlowFilter{{SourcePod: pods(mine), DestinationPod: pods(others), Reply: []bool{true}}}
	}
	return whitelist, blacklist, true
}

// DefaultShardRefresh is how often a sharded replica lists the namespaces.
const DefaultShardRefresh = 30 * time.Second

// shardClient subscribes to the shard's flows only: it adds the shard's
// filters to every GetFlows request, lists the namespaces before each
// subscription and every refresh while the stream runs, and ends the stream
// when the selection changes, so that the observer subscribes again from its
// resume point.
type shardClient struct {
	observer.ObserverClient
	shard   Shard
	refresh time.Duration
	log     *slog.Logger

	now   func() time.Time
	mu    sync.Mutex
	known map[string]time.Time // every namespace listed so far (a namespace Relay forgets keeps its owner), and when first (zero: at the first listing)
	once  bool                 // listed once
}

func newShardClient(c observer.ObserverClient, s Shard, refresh time.Duration, log *slog.Logger) *shardClient {
	if refresh <= 0 {
		refresh = DefaultShardRefresh
	}
	log = log.With("shard", s.String())
	if s.Count == 2 {
		log.Warn("with 2 replicas, replica 1 takes every flow opened in a namespace and replica 0 only those opened outside any: run 3 or more to split the namespaces")
	}
	return &shardClient{ObserverClient: c, shard: s, refresh: refresh, log: log, now: time.Now, known: map[string]time.Time{}}
}

// settleAfter is how long a namespace listed after the first listing is
// taken by its owner before the other replicas give it up: long enough for
// every replica to list it (each lists every refresh).
func (c *shardClient) settleAfter() time.Duration { return 2 * c.refresh }

// list adds the namespaces the server lists now to those known, and returns
// the filters for them.
func (c *shardClient) list(ctx context.Context) (shardSelection, error) {
	resp, err := c.GetNamespaces(ctx, &observer.GetNamespacesRequest{})
	if err != nil {
		return shardSelection{}, fmt.Errorf("list namespaces for shard %s: %w", c.shard, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for _, ns := range resp.GetNamespaces() {
		if n := ns.GetNamespace(); n != "" {
			if _, seen := c.known[n]; !seen {
				first := now
				if !c.once {
					first = time.Time{}
				}
				c.known[n] = first
			}
		}
	}
	c.once = true
	known := make([]string, 0, len(c.known))
	for ns := range c.known {
		known = append(known, ns)
	}
	settled := func(ns string) bool {
		first := c.known[ns]
		return first.IsZero() || now.Sub(first) >= c.settleAfter()
	}
	var sel shardSelection
	sel.whitelist, sel.blacklist, sel.ok = c.shard.filters(known, settled)
	sel.namespaces = len(known)
	return sel, nil
}

type shardSelection struct {
	whitelist, blacklist []*flowpb.FlowFilter
	ok                   bool
	namespaces           int
}

func (a shardSelection) equal(b shardSelection) bool {
	eq := func(x, y []*flowpb.FlowFilter) bool {
		return slices.EqualFunc(x, y, func(f, g *flowpb.FlowFilter) bool { return proto.Equal(f, g) })
	}
	return a.ok == b.ok && eq(a.whitelist, b.whitelist) && eq(a.blacklist, b.blacklist)
}

// errShardChanged ends a stream whose shard selection changed.
var errShardChanged = errors.New("the shard's namespaces changed")

// GetFlows subscribes with the shard's filters. While the shard owns no
// known namespace it waits, listing them every refresh.
func (c *shardClient) GetFlows(ctx context.Context, req *observer.GetFlowsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[observer.GetFlowsResponse], error) {
	sel, err := c.list(ctx)
	for err == nil && !sel.ok {
		c.log.Info("this shard owns none of the namespaces listed; waiting for more", "namespaces", sel.namespaces, "refresh", c.refresh)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.refresh):
		}
		sel, err = c.list(ctx)
	}
	if err != nil {
		return nil, err
	}
	req = proto.CloneOf(req)
	req.Whitelist = append(req.Whitelist, sel.whitelist...)
	req.Blacklist = append(req.Blacklist, sel.blacklist...)
	sctx, cancel := context.WithCancelCause(ctx)
	st, err := c.ObserverClient.GetFlows(sctx, req, opts...)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	c.log.Info("subscribed to this shard's flows", "namespaces", sel.namespaces, "whitelist", len(sel.whitelist), "blacklist", len(sel.blacklist))
	// The watch ends with the stream: the observer cancels ctx when it
	// leaves a stream, and a change cancels sctx.
	go func() {
		defer cancel(nil)
		t := time.NewTicker(c.refresh)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			now, err := c.list(sctx)
			if err != nil {
				if sctx.Err() == nil {
					c.log.Warn("listing namespaces failed; keeping the current selection", "err", err)
				}
				continue
			}
			if !now.equal(sel) {
				c.log.Info("namespaces changed; subscribing again from the resume point", "namespaces", now.namespaces)
				cancel(errShardChanged)
				return
			}
		}
	}()
	return st, nil
}
