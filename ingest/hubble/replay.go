package hubble

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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
	TLS        TLSConfig
}

// Replay is an observer gRPC server that serves recorded flows, for demos
// and tests. It honours GetFlows' since, until, number and follow.
type Replay struct {
	observer.UnimplementedObserverServer
	cfg    ReplayConfig
	log    *slog.Logger
	flows  []*observer.GetFlowsResponse
	start  time.Time     // with ShiftToNow
	step   time.Duration // with ShiftToNow
	period time.Duration
	served atomic.Int64
	lis    net.Listener
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
	r := &Replay{cfg: cfg, log: log.With("component", "hubble-replay")}
	skipped := 0
	for _, path := range cfg.Files {
		n, err := r.load(path)
		if err != nil {
			return nil, err
		}
		skipped += n
	}
	if len(r.flows) == 0 {
		return nil, fmt.Errorf("replay: no flows in %v (%d lines skipped)", cfg.Files, skipped)
	}
	sort.SliceStable(r.flows, func(i, j int) bool {
		return r.flows[i].GetFlow().GetTime().AsTime().Before(r.flows[j].GetFlow().GetTime().AsTime())
	})
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
	if skipped > 0 {
		r.log.Warn("skipped lines that are not flows", "lines", skipped)
	}
	return r, nil
}

func (r *Replay) load(path string) (skipped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	var in io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("replay: %s: %w", path, err)
		}
		defer gz.Close()
		in = gz
	}
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
	var opts []grpc.ServerOption
	if r.cfg.TLS.Enabled {
		tc, err := r.cfg.TLS.ServerConfig()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	observer.RegisterObserverServer(srv, r)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(r.lis) }()
	r.log.Info("serving recorded flows", "addr", r.Addr(), "flows", len(r.flows), "rate", r.cfg.Rate, "loop", r.cfg.Loop)
	select {
	case <-ctx.Done():
		srv.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("replay: %w", err)
	}
}

// flowAt returns the i-th flow of the endless (or single) sequence, with its
// time shifted for the pass it belongs to.
func (r *Replay) flowAt(i int) *observer.GetFlowsResponse {
	pass := i / len(r.flows)
	src := r.flows[i%len(r.flows)]
	var t *timestamppb.Timestamp
	switch {
	case r.cfg.ShiftToNow:
		t = timestamppb.New(r.start.Add(time.Duration(i) * r.step))
	case pass > 0:
		t = timestamppb.New(src.GetFlow().GetTime().AsTime().Add(time.Duration(pass) * r.period))
	default:
		return src
	}
	out := proto.Clone(src).(*observer.GetFlowsResponse)
	out.GetFlow().Time = t
	out.Time = t
	return out
}

// GetFlows implements the observer API.
func (r *Replay) GetFlows(req *observer.GetFlowsRequest, stream grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	ctx := stream.Context()
	var since, until time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		until = req.GetUntil().AsTime()
	}
	if req.GetFirst() {
		return status.Error(codes.Unimplemented, "replay: first=true is not supported")
	}
	if req.GetNumber() != 0 && !req.GetFollow() && since.IsZero() {
		// "hubble observe --last N": the last N flows of one pass.
		for i := max(0, len(r.flows)-int(req.GetNumber())); i < len(r.flows); i++ {
			if err := stream.Send(r.flowAt(i)); err != nil {
				return err
			}
			r.served.Add(1)
		}
		return nil
	}
	// Pacing by elapsed time rather than a ticker per flow: tickers cannot
	// fire every 50 µs, so high rates are sent in small bursts.
	began := time.Now()
	sent := uint64(0)
	for i := 0; r.cfg.Loop || i < len(r.flows); i++ {
		resp := r.flowAt(i)
		ft := resp.GetFlow().GetTime().AsTime()
		if !since.IsZero() && ft.Before(since) {
			continue
		}
		if !until.IsZero() && ft.After(until) {
			break
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
		if err := stream.Send(resp); err != nil {
			return err
		}
		r.served.Add(1)
		sent++
		if req.GetNumber() != 0 && sent >= req.GetNumber() {
			return nil
		}
	}
	if req.GetFollow() {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// ServerStatus implements the observer API.
func (r *Replay) ServerStatus(context.Context, *observer.ServerStatusRequest) (*observer.ServerStatusResponse, error) {
	return &observer.ServerStatusResponse{
		NumFlows:            uint64(len(r.flows)),
		MaxFlows:            uint64(len(r.flows)),
		SeenFlows:           uint64(r.served.Load()),
		NumConnectedNodes:   wrapperspb.UInt32(1),
		NumUnavailableNodes: wrapperspb.UInt32(0),
		Version:             "flowwarden-replay",
	}, nil
}
