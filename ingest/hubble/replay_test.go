package hubble

import (
	"context"
	"errors"
	"io"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// replayClient serves the 400-TCP-flow sample (cfg's files unless set) and
// returns a client of it.
func replayClient(t *testing.T, cfg ReplayConfig) (*Replay, observer.ObserverClient, *grpc.ClientConn) {
	t.Helper()
	if cfg.Files == nil {
		cfg.Files = []string{"../../testdata/hubble/basic-sample-400-tcp-flows.json"}
	}
	cfg.Listen = "127.0.0.1:0"
	r := startReplayServer(t, cfg)
	conn, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r, observer.NewObserverClient(conn), conn
}

// collect reads a GetFlows stream to its end (or n flows, if n > 0) and
// returns the flows and how the stream ended.
func collect(ctx context.Context, t *testing.T, c observer.ObserverClient, req *observer.GetFlowsRequest, n int) ([]*flowpb.Flow, error) {
	t.Helper()
	st, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*flowpb.Flow
	for n <= 0 || len(out) < n {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, resp.GetFlow())
	}
	return out, nil
}

func TestReplayGetFlowsSelection(t *testing.T) {
	r, c, _ := replayClient(t, ReplayConfig{})
	ctx := context.Background()
	all, err := collect(ctx, t, c, &observer.GetFlowsRequest{Number: math.MaxUint64}, 0)
	if err != nil || len(all) != r.Len() || r.Len() != 400 {
		t.Fatalf("Number max uint64: %d flows (%v), want all %d", len(all), err, r.Len())
	}
	at := func(i int) time.Time { return all[i].GetTime().AsTime() }

	// The last N counts selected flows back from the newest.
	syn := &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}
	var synIdx []int
	for i, f := range all {
		if f.GetL4().GetTCP().GetFlags().GetSYN() {
			synIdx = append(synIdx, i)
		}
	}
	if len(synIdx) < 6 {
		t.Fatalf("sample has %d SYN flows", len(synIdx))
	}
	last, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Number: 3, Whitelist: []*flowpb.FlowFilter{syn}}, 0)
	if len(last) != 3 || !last[0].GetTime().AsTime().Equal(at(synIdx[len(synIdx)-3])) || !last[2].GetTime().AsTime().Equal(at(synIdx[len(synIdx)-1])) {
		t.Fatalf("last 3 SYN: %d flows", len(last))
	}
	first, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Number: 2, First: true, Whitelist: []*flowpb.FlowFilter{syn}}, 0)
	if len(first) != 2 || !first[0].GetTime().AsTime().Equal(at(synIdx[0])) || !first[1].GetTime().AsTime().Equal(at(synIdx[1])) {
		t.Fatalf("first 2 SYN: %d flows", len(first))
	}
	// Blacklist only: everything but the SYNs.
	rest, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Number: math.MaxUint64, Blacklist: []*flowpb.FlowFilter{syn}}, 0)
	if len(rest) != 400-len(synIdx) {
		t.Fatalf("blacklist SYN: %d flows, want %d", len(rest), 400-len(synIdx))
	}
	// Since and until bound a window (both inclusive).
	win, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Since: all[100].GetTime(), Until: all[199].GetTime()}, 0)
	want := 0
	for i := range all {
		if !at(i).Before(at(100)) && !at(i).After(at(199)) {
			want++
		}
	}
	if len(win) != want || want < 100 {
		t.Fatalf("since/until window: %d flows, want %d", len(win), want)
	}
	// since with number: the first N from since.
	from, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Since: all[50].GetTime(), Number: 4}, 0)
	if len(from) != 4 || from[0].GetTime().AsTime().Before(at(50)) {
		t.Fatalf("since + number 4: %d flows", len(from))
	}

	// A field mask keeps only the fields it names.
	masked, _ := collect(ctx, t, c, &observer.GetFlowsRequest{Number: 5, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"verdict", "source.namespace", "source.pod_name"}}}, 0)
	if len(masked) != 5 {
		t.Fatalf("masked: %d flows", len(masked))
	}
	for i, f := range masked {
		orig := all[len(all)-5+i]
		want := &flowpb.Flow{Verdict: orig.GetVerdict(), Source: &flowpb.Endpoint{Namespace: orig.GetSource().GetNamespace(), PodName: orig.GetSource().GetPodName()}}
		if !proto.Equal(f, want) {
			t.Fatalf("masked flow %d: %v, want %v", i, f, want)
		}
	}

	// Refusals, as Hubble's: first with follow, bad filters, bad masks.
	for _, req := range []*observer.GetFlowsRequest{
		{First: true, Follow: true},
		{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.no_such_field"}}},
		{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"not-an-ip"}}}},
		{Blacklist: []*flowpb.FlowFilter{{DestinationPort: []string{"99999"}}}},
	} {
		if _, err := collect(ctx, t, c, req, 0); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
}

func TestReplayGetFlowsFollow(t *testing.T) {
	// Without Loop nothing new comes: after the last N, the stream stays open
	// until the client leaves.
	r, c, _ := replayClient(t, ReplayConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	got, err := collect(ctx, t, c, &observer.GetFlowsRequest{Number: 3, Follow: true}, 0)
	if len(got) != 3 || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("last 3 + follow, no loop: %d flows, ended with %v; want 3 and the stream open", len(got), err)
	}
	// Follow alone plays the recording from its start.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	got, err = collect(ctx2, t, c, &observer.GetFlowsRequest{Follow: true}, r.Len())
	if err != nil || len(got) != r.Len() {
		t.Fatalf("follow: %d flows (%v), want %d", len(got), err, r.Len())
	}

	// With Loop: the last N of the buffer, then the next pass; since/until
	// bound a follow stream too.
	lr, lc, _ := replayClient(t, ReplayConfig{Loop: true})
	one, _ := collect(ctx2, t, lc, &observer.GetFlowsRequest{}, 0)
	if len(one) != lr.Len() {
		t.Fatalf("a looping replay's buffer is one pass: %d flows, want %d", len(one), lr.Len())
	}
	got, err = collect(ctx2, t, lc, &observer.GetFlowsRequest{Number: 2, Follow: true}, 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("last 2 + follow: %d flows (%v)", len(got), err)
	}
	n := len(one)
	shift := got[2].GetTime().AsTime().Sub(one[0].GetTime().AsTime())
	if !got[0].GetTime().AsTime().Equal(one[n-2].GetTime().AsTime()) || shift <= 0 ||
		got[4].GetTime().AsTime().Sub(one[2].GetTime().AsTime()) != shift {
		t.Fatalf("last 2 + follow: times %v %v %v, want the last 2 then the next pass", got[0].GetTime().AsTime(), got[1].GetTime().AsTime(), got[2].GetTime().AsTime())
	}
	// since in the second pass, until in the third, following.
	since := timestamppb.New(one[10].GetTime().AsTime().Add(shift))
	until := timestamppb.New(one[5].GetTime().AsTime().Add(2 * shift))
	got, err = collect(ctx2, t, lc, &observer.GetFlowsRequest{Since: since, Until: until, Follow: true}, 0)
	if err != nil || len(got) != n-10+6 {
		t.Fatalf("since pass 2 flow 10, until pass 3 flow 5, follow: %d flows (%v), want %d", len(got), err, n-10+6)
	}
}

func TestReplayStatusNodesHealth(t *testing.T) {
	r, c, conn := replayClient(t, ReplayConfig{Files: hubbleCLIFiles(t)})
	ctx := context.Background()
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "hubble.server.Observer"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	st, err := c.ServerStatus(ctx, &observer.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.GetNodes(ctx, &observer.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, n := range nodes.GetNodes() {
		sum += n.GetNumFlows()
	}
	if st.GetNumFlows() != uint64(r.Len()) || st.GetMaxFlows() != uint64(r.Len()) ||
		int(st.GetNumConnectedNodes().GetValue()) != len(nodes.GetNodes()) || len(nodes.GetNodes()) < 6 || sum != uint64(r.Len()) {
		t.Fatalf("status %v; %d nodes with %d flows; want %d flows", st, len(nodes.GetNodes()), sum, r.Len())
	}
	ns, err := c.GetNamespaces(ctx, &observer.GetNamespacesRequest{})
	if err != nil || len(ns.GetNamespaces()) < 4 {
		t.Fatalf("namespaces: %v %v", ns, err)
	}
}

// With Loop and ShiftToNow the flows stamped up to now have been seen: the
// buffer rolls forward and holds the newest pass-worth of them.
func TestReplayRollingBuffer(t *testing.T) {
	r, c, _ := replayClient(t, ReplayConfig{Loop: true, ShiftToNow: true}) // stamped 1 ms apart
	time.Sleep(700 * time.Millisecond)
	ctx := context.Background()
	st, err := c.ServerStatus(ctx, &observer.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumFlows() != uint64(r.Len()) || st.GetSeenFlows() < 700 {
		t.Fatalf("after 700 ms at 1 flow/ms: %d flows in the buffer, %d seen; want %d and at least 700", st.GetNumFlows(), st.GetSeenFlows(), r.Len())
	}
	got, err := collect(ctx, t, c, &observer.GetFlowsRequest{Number: math.MaxUint64}, 0)
	asked := time.Now()
	if err != nil || len(got) != r.Len() {
		t.Fatalf("all of the buffer: %d flows (%v), want %d", len(got), err, r.Len())
	}
	for i, f := range got {
		ft := f.GetTime().AsTime()
		if ft.After(asked) || i > 0 && ft.Sub(got[i-1].GetTime().AsTime()) != time.Millisecond {
			t.Fatalf("flow %d at %s (asked at %s): the buffer must hold consecutive seen flows", i, ft, asked)
		}
	}
	if first := got[0].GetTime().AsTime(); first.Sub(r.start) < 300*time.Millisecond {
		t.Fatalf("the buffer still starts %s after the start; it should have rolled past the first pass", first.Sub(r.start))
	}
}

// With KeepSpacing each file keeps its recorded spacing and ends at the
// start: the first pass is the past, sent at once; the next pass follows in
// real time, no flow sent before its time.
func TestReplayKeepSpacing(t *testing.T) {
	files := []string{"../../testdata/hubble/basic-sample-400-tcp-flows.json", "../../testdata/hubble/basic-sample-10-flows.json"}
	r, c, _ := replayClient(t, ReplayConfig{Files: files, Loop: true, ShiftToNow: true, KeepSpacing: true})
	// The expected first pass: each file's times moved to end at the start.
	var want []time.Time
	samples := sampleLines(t)
	for _, path := range files {
		var times []time.Time
		for _, line := range samples[filepath.Base(path)] {
			f, err := ParseResponseJSON(line)
			if err != nil {
				continue
			}
			times = append(times, f.Time)
		}
		last := slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		for _, ft := range times {
			want = append(want, r.start.Add(ft.Sub(last)))
		}
	}
	slices.SortFunc(want, func(a, b time.Time) int { return a.Compare(b) })
	if len(want) != r.Len() {
		t.Fatalf("%d flows in the files, %d served", len(want), r.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.GetFlows(ctx, &observer.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	// The endless sequence: pass k is the first pass k periods later. The
	// stream starts at its buffer, the newest pass-worth of flows stamped
	// up to now (the start is now rounded down to the second, so the buffer
	// may have rolled into the second pass already).
	exp := func(k int) time.Time { return want[k%len(want)].Add(time.Duration(k/len(want)) * r.period) }
	k0 := -1
	for i := 0; i < r.Len()+20; i++ {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		got, received := resp.GetFlow().GetTime().AsTime(), time.Now()
		if k0 < 0 {
			for k := range 2 * len(want) {
				if exp(k).Equal(got) {
					k0 = k
					break
				}
			}
			if k0 < 0 || got.After(r.start.Add(time.Second)) {
				t.Fatalf("the stream starts at %s, not a flow of the first two passes stamped before now", got)
			}
		}
		if w := exp(k0 + i); !got.Equal(w) {
			t.Fatalf("flow %d at %s, want %s (spacing not kept)", k0+i, got, w)
		}
		if received.Before(got) {
			t.Fatalf("flow %d stamped %s was sent early, at %s", k0+i, got, received)
		}
	}
	if k0+r.Len()+20 <= len(want) {
		t.Fatal("no flow of the second pass was read")
	}
	if s, err := c.ServerStatus(ctx, &observer.ServerStatusRequest{}); err != nil || s.GetNumFlows() != uint64(r.Len()) || s.GetSeenFlows() < uint64(r.Len()) {
		t.Fatalf("status %v (%v): want a buffer of one pass", s, err)
	}
}
