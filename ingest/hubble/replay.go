package hubble

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/flowwarden/flowwarden/ingest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ReplayConfig configures the replay server.
type ReplayConfig struct {
	// Files are Hubble JSON-lines files; their flows are served in time order.
	Files []string
	// Listen is the gRPC listen address (default 127.0.0.1:4245, Relay's port).
	Listen string
	// Rate limits flows per second per stream (0: as fast as the client reads).
	Rate float64
	// Loop serves the recording again and again, each pass shifted later by
	// the recording's span, so every flow has a distinct time.
	Loop bool
	// ShiftToNow re-times the flows for demos: flow i is stamped start+i/Rate
	// (start: the server's start, rounded down to the second; 1 ms apart when
	// Rate is 0), so flows appear as they are sent, however old or far apart
	// the recordings are. Without it, flows keep their recorded times (passes
	// of Loop shifted later by the recording's span), so a restarted server
	// serves the same flows again.
	ShiftToNow bool
	// KeepSpacing (with ShiftToNow) keeps each file's recorded spacing
	// instead: every file is moved to end at the server's start, so the
	// first pass is the past hour (or whatever the longest file spans),
	// served at Rate, and later passes follow it in real time, each flow
	// sent once its time has come. Detectors that compare a window with
	// the ones before it (egress spikes, beacons, tunnels, scans) then see
	// the recording as it happened, which evenly spaced flows flatten.
	KeepSpacing bool
	TLS         TLSConfig
}

// Replay is an observer gRPC server that serves recorded flows, for demos
// and tests, as a Hubble server would: GetFlows with its filters, number,
// first, follow, since and until; ServerStatus, GetNodes, GetNamespaces and
// the gRPC health service ("hubble status", "hubble list nodes").
type Replay struct {
	observer.UnimplementedObserverServer
	cfg     ReplayConfig
	log     *slog.Logger
	flows   []*observer.GetFlowsResponse
	wire    []replayWire // flows marshalled without their times
	nodes   []replayNode // sorted by name
	created time.Time
	start   time.Time     // with ShiftToNow
	step    time.Duration // with ShiftToNow
	// offsets, with KeepSpacing, are each flow's time from the end of its
	// file (zero or negative), in the order of flows.
	offsets []time.Duration
	period  time.Duration
	served  atomic.Int64
	lis     net.Listener
}

// replayNode is a node of the recording and how many flows it observed.
type replayNode struct {
	name  string
	flows uint64
}

// NewReplay loads the files (protojson, the reference parser) and sorts
// their flows by time. Lines that do not parse are skipped and counted in the
// returned error only when no flow loads at all.
func NewReplay(cfg ReplayConfig, log *slog.Logger) (*Replay, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4245"
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Replay{cfg: cfg, log: log.With("component", "hubble-replay"), created: time.Now()}
	if cfg.KeepSpacing && !cfg.ShiftToNow {
		return nil, errors.New("replay: keeping the recorded spacing needs shifting to now")
	}
	skipped := 0
	for _, path := range cfg.Files {
		from := len(r.flows)
		n, err := r.load(path)
		if err != nil {
			return nil, err
		}
		skipped += n
		if cfg.KeepSpacing {
			r.offsets = append(r.offsets, fileOffsets(r.flows[from:])...)
		}
	}
	if len(r.flows) == 0 {
		return nil, fmt.Errorf("replay: no flows in %v (%d lines skipped)", cfg.Files, skipped)
	}
	if cfg.KeepSpacing {
		sort.Stable(byOffset{r})
	} else {
		sort.SliceStable(r.flows, func(i, j int) bool {
			return r.flows[i].GetFlow().GetTime().AsTime().Before(r.flows[j].GetFlow().GetTime().AsTime())
		})
	}
	perNode := map[string]uint64{}
	for _, resp := range r.flows {
		perNode[resp.GetFlow().GetNodeName()]++
	}
	for name, n := range perNode {
		if name == "" {
			name = "replay" // a recording without node names: one node
		}
		r.nodes = append(r.nodes, replayNode{name: name, flows: n})
	}
	sort.Slice(r.nodes, func(i, j int) bool { return r.nodes[i].name < r.nodes[j].name })
	first := r.flows[0].GetFlow().GetTime().AsTime()
	last := r.flows[len(r.flows)-1].GetFlow().GetTime().AsTime()
	r.period = last.Sub(first) + time.Millisecond
	if cfg.ShiftToNow {
		r.start = time.Now().Truncate(time.Second)
		r.step = time.Millisecond
		if cfg.Rate > 0 {
			r.step = time.Duration(float64(time.Second) / cfg.Rate)
		}
	}
	if cfg.KeepSpacing {
		// One pass spans the files moved to end together; the next pass
		// starts a millisecond after it.
		r.period = -r.offsets[0] + time.Millisecond
	}
	if err := r.encodeWire(); err != nil {
		return nil, err
	}
	if skipped > 0 {
		r.log.Warn("skipped lines that are not flows", "lines", skipped)
	}
	return r, nil
}

func (r *Replay) load(path string) (skipped int, err error) {
	in, err := ingest.OpenInput(context.Background(), path)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer in.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), MaxLineBytes)
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	for sc.Scan() {
		var resp observer.GetFlowsResponse
		if err := opts.Unmarshal(sc.Bytes(), &resp); err != nil || resp.GetFlow() == nil {
			skipped++
			continue
		}
		fl := resp.GetFlow()
		if fl.GetTime() == nil {
			if resp.GetTime() == nil {
				skipped++
				continue
			}
			fl.Time = resp.GetTime()
		}
		if fl.GetNodeName() == "" {
			fl.NodeName = resp.GetNodeName()
		}
		r.flows = append(r.flows, &resp)
	}
	if err := sc.Err(); err != nil {
		return skipped, fmt.Errorf("replay: read %s: %w", path, err)
	}
	return skipped, nil
}

// Len is the number of recorded flows (one pass).
func (r *Replay) Len() int { return len(r.flows) }

// Served counts the flows sent to clients.
func (r *Replay) Served() int64 { return r.served.Load() }

// Addr is the address the server listens on, once Run has started.
func (r *Replay) Addr() string {
	if r.lis == nil {
		return r.cfg.Listen
	}
	return r.lis.Addr().String()
}

// Listen opens the listening socket (Run calls it if needed).
func (r *Replay) Listen() error {
	if r.lis != nil {
		return nil
	}
	lis, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return fmt.Errorf("replay: listen: %w", err)
	}
	r.lis = lis
	return nil
}

// Run serves until ctx ends.
func (r *Replay) Run(ctx context.Context) error {
	if err := r.Listen(); err != nil {
		return err
	}
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(wireCodec{protoCodec()})}
	if r.cfg.TLS.Enabled {
		tc, err := r.cfg.TLS.ServerConfig()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	observer.RegisterObserverServer(srv, r)
	// "hubble status" asks the standard health service about Hubble's
	// observer service name before it asks for ServerStatus.
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(observerServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(r.lis) }()
	r.log.Info("serving recorded flows", "addr", r.Addr(), "flows", len(r.flows), "rate", r.cfg.Rate, "loop", r.cfg.Loop)
	select {
	case <-ctx.Done():
		hs.Shutdown()
		srv.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("replay: %w", err)
	}
}

// The replay's model of a Hubble server: its ring buffer holds one pass of
// the recording (MaxFlows is the number of recorded flows), which is what
// --last, --first, --all, --since and --until read. With Loop, later passes
// are the new flows a follow request receives after the buffer; with Loop
// and ShiftToNow, flows stamped up to now have been seen and the buffer
// holds the last pass-worth of them. Whatever the request, a stream sends at
// most Rate flows per second.

// fileOffsets are the flows' times from the newest of them.
func fileOffsets(flows []*observer.GetFlowsResponse) []time.Duration {
	var last time.Time
	for _, f := range flows {
		if t := f.GetFlow().GetTime().AsTime(); t.After(last) {
			last = t
		}
	}
	out := make([]time.Duration, len(flows))
	for i, f := range flows {
		out[i] = f.GetFlow().GetTime().AsTime().Sub(last)
	}
	return out
}

// byOffset sorts the flows of a KeepSpacing replay by their offsets.
type byOffset struct{ r *Replay }

func (b byOffset) Len() int           { return len(b.r.flows) }
func (b byOffset) Less(i, j int) bool { return b.r.offsets[i] < b.r.offsets[j] }
func (b byOffset) Swap(i, j int) {
	b.r.flows[i], b.r.flows[j] = b.r.flows[j], b.r.flows[i]
	b.r.offsets[i], b.r.offsets[j] = b.r.offsets[j], b.r.offsets[i]
}

// timeAt is the time of the i-th flow of the endless (or single) sequence.
func (r *Replay) timeAt(i int) time.Time {
	if r.cfg.KeepSpacing {
		return r.start.Add(r.offsets[i%len(r.flows)] + time.Duration(i/len(r.flows))*r.period)
	}
	if r.cfg.ShiftToNow {
		return r.start.Add(time.Duration(i) * r.step)
	}
	t := r.flows[i%len(r.flows)].GetFlow().GetTime().AsTime()
	if pass := i / len(r.flows); pass > 0 {
		t = t.Add(time.Duration(pass) * r.period)
	}
	return t
}

// flowAt returns the i-th flow of the endless (or single) sequence, with its
// time shifted for the pass it belongs to.
func (r *Replay) flowAt(i int) *observer.GetFlowsResponse {
	src := r.flows[i%len(r.flows)]
	if !r.cfg.ShiftToNow && i < len(r.flows) {
		return src
	}
	t := timestamppb.New(r.timeAt(i))
	out := proto.Clone(src).(*observer.GetFlowsResponse)
	out.GetFlow().Time = t
	out.Time = t
	return out
}

// maxIndex bounds searches in the endless sequence of a looping replay.
const maxIndex = 1 << 40

// buffer is the part of the sequence a request made at now finds already
// seen: [lo, hi).
func (r *Replay) buffer(now time.Time) (lo, hi int) {
	hi = len(r.flows)
	if r.cfg.Loop && r.cfg.KeepSpacing {
		// The flows stamped up to now.
		hi = max(hi, r.firstAtOrAfter(now.Add(time.Nanosecond), 0, -1))
		return hi - len(r.flows), hi
	}
	if r.cfg.Loop && r.cfg.ShiftToNow && now.After(r.start) {
		seen := int(min(int64(now.Sub(r.start)/r.step)+1, maxIndex))
		hi = max(hi, seen)
	}
	return hi - len(r.flows), hi
}

// firstAtOrAfter is the first index in [lo, hi) whose flow is not before t
// (hi if none); hi < 0 searches the endless sequence.
func (r *Replay) firstAtOrAfter(t time.Time, lo, hi int) int {
	if hi < 0 {
		hi = max(lo+1, len(r.flows))
		for hi < maxIndex && r.timeAt(hi-1).Before(t) {
			hi *= 2
		}
	}
	return lo + sort.Search(hi-lo, func(k int) bool { return !r.timeAt(lo + k).Before(t) })
}

// GetFlows implements the observer API with Hubble's semantics: the
// whitelist and blacklist select flows; since (or first) picks where in the
// buffer to start, otherwise number counts selected flows back from the
// newest (all of them when 0 or max uint64); without follow the stream ends
// after number selected flows or at the end of the buffer, with follow it
// goes on with new flows until until or the client leaves. A follow request
// with neither number nor since plays the recording from the start of the
// buffer (a live Hubble would send only new flows, and a replay without
// Loop has none). A field mask keeps only the fields it names.
func (r *Replay) GetFlows(req *observer.GetFlowsRequest, stream grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	ctx := stream.Context()
	if req.GetFirst() && req.GetFollow() {
		return status.Error(codes.InvalidArgument, "first cannot be specified with follow")
	}
	filter, err := newRequestFilter(req.GetWhitelist(), req.GetBlacklist())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var since, until time.Time
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		since = ts.AsTime()
	}
	if ts := req.GetUntil(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		until = ts.AsTime()
	}
	mask, err := newFlowMask(req.GetFieldMask())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	follow, number := req.GetFollow(), req.GetNumber()
	keep := func(i int) bool { return filter.keep(r.flows[i%len(r.flows)].GetFlow()) }

	lo, hi := r.buffer(time.Now())
	var from int
	switch {
	case req.GetSince() != nil:
		end := hi
		if follow && r.cfg.Loop {
			end = -1
		} else if follow {
			end = len(r.flows)
		}
		from = r.firstAtOrAfter(since, lo, end)
	case req.GetFirst(), follow && number == 0:
		from = lo
	default:
		// The newest number selected flows; number 0 (or one beyond the
		// buffer, as --all's max uint64) reaches back to the oldest.
		from = hi
		for found := uint64(0); from > lo && (number == 0 || found < number); {
			from--
			if keep(from) {
				found++
			}
		}
	}

	// Pacing by elapsed time rather than a ticker per flow: tickers cannot
	// fire every 50 µs, so high rates are sent in small bursts.
	began := time.Now()
	sent := uint64(0)
	for i := from; ; i++ {
		if !follow && i >= hi {
			return nil
		}
		if !r.cfg.Loop && i >= len(r.flows) || i >= maxIndex {
			// Nothing new will come: hold the stream open as Hubble does.
			<-ctx.Done()
			return ctx.Err()
		}
		ft := r.timeAt(i)
		if !until.IsZero() && ft.After(until) {
			return nil
		}
		if !since.IsZero() && ft.Before(since) || !keep(i) {
			continue
		}
		if r.cfg.KeepSpacing {
			// A flow is sent once its time has come.
			if wait := time.Until(ft); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if r.cfg.Rate > 0 {
			if ahead := time.Duration(float64(sent)/r.cfg.Rate*float64(time.Second)) - time.Since(began); ahead > time.Millisecond {
				select {
				case <-time.After(ahead):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if err := r.send(stream, i, mask); err != nil {
			return err
		}
		r.served.Add(1)
		sent++
		if !follow && number != 0 && sent >= number {
			return nil
		}
	}
}

// ServerStatus implements the observer API ("hubble status").
func (r *Replay) ServerStatus(context.Context, *observer.ServerStatusRequest) (*observer.ServerStatusResponse, error) {
	now := time.Now()
	lo, hi := r.buffer(now)
	var rate float64
	switch {
	case r.cfg.Loop && r.cfg.KeepSpacing:
		rate = float64(len(r.flows)) / r.period.Seconds()
	case r.cfg.Loop && r.cfg.ShiftToNow:
		rate = float64(time.Second) / float64(r.step)
	}
	return &observer.ServerStatusResponse{
		NumFlows:            uint64(hi - lo),
		MaxFlows:            uint64(len(r.flows)),
		SeenFlows:           uint64(hi),
		UptimeNs:            uint64(now.Sub(r.created)),
		NumConnectedNodes:   wrapperspb.UInt32(uint32(len(r.nodes))),
		NumUnavailableNodes: wrapperspb.UInt32(0),
		Version:             replayVersion,
		FlowsRate:           rate,
	}, nil
}

// observerServiceName is the name Hubble's servers give their observer
// service in health checks.
const observerServiceName = "hubble.server.Observer"

// replayVersion is what status and node listings report as the server's
// version.
const replayVersion = "flowwarden-replay"

// GetNodes implements the observer API ("hubble list nodes"): the nodes the
// recording's flows were observed on, each with its share of the flows.
func (r *Replay) GetNodes(context.Context, *observer.GetNodesRequest) (*observer.GetNodesResponse, error) {
	uptime := uint64(time.Since(r.created))
	out := &observer.GetNodesResponse{Nodes: make([]*observer.Node, 0, len(r.nodes))}
	for _, n := range r.nodes {
		out.Nodes = append(out.Nodes, &observer.Node{
			Name:      n.name,
			Version:   replayVersion,
			Address:   r.Addr(),
			State:     relaypb.NodeState_NODE_CONNECTED,
			Tls:       &observer.TLS{Enabled: r.cfg.TLS.Enabled},
			UptimeNs:  uptime,
			NumFlows:  n.flows,
			MaxFlows:  n.flows,
			SeenFlows: n.flows,
		})
	}
	return out, nil
}

// GetNamespaces implements the observer API ("hubble list namespaces"): the
// namespaces of the recording's endpoints.
func (r *Replay) GetNamespaces(context.Context, *observer.GetNamespacesRequest) (*observer.GetNamespacesResponse, error) {
	type key struct{ cluster, ns string }
	seen := map[key]bool{}
	out := &observer.GetNamespacesResponse{}
	for _, resp := range r.flows {
		for _, ep := range []*flowpb.Endpoint{resp.GetFlow().GetSource(), resp.GetFlow().GetDestination()} {
			k := key{ep.GetClusterName(), ep.GetNamespace()}
			if k.ns == "" || seen[k] {
				continue
			}
			seen[k] = true
			out.Namespaces = append(out.Namespaces, &observer.Namespace{Cluster: k.cluster, Namespace: k.ns})
		}
	}
	sort.Slice(out.Namespaces, func(i, j int) bool {
		a, b := out.Namespaces[i], out.Namespaces[j]
		return a.GetCluster() < b.GetCluster() || a.GetCluster() == b.GetCluster() && a.GetNamespace() < b.GetNamespace()
	})
	return out, nil
}
