package conntrack

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/netnstest"
	"github.com/flowwarden/flowwarden/schema"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// TestDumpSeesRealConnections makes TCP connections inside a fresh network
// namespace (with a conntrack-using rule so tracking is on there) and finds
// them in the conntrack dump with the right tuples.
func TestDumpSeesRealConnections(t *testing.T) {
	ns := netnstest.New(t)
	ns.TrackConnections(t)
	ns.Traffic(t, 18090, 3, 2048, 0)
	conn, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	flows, err := Dump(conn, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Protocol == "TCP" && f.DstPort == 18090 {
			n++
			if f.SrcIP.String() != "127.0.0.1" || f.DstIP.String() != "127.0.0.1" || f.SrcPort == 0 || f.Source != "conntrack" || f.Node != "node-1" {
				t.Errorf("wrong tuple: %+v", f)
			}
		}
	}
	if n != 3 {
		t.Fatalf("%d conntrack entries to port 18090, want 3 (of %d entries)", n, len(flows))
	}
}

// TestPollerReportsEachConnectionOnceWithFinalCounters runs short TCP
// connections in a namespace with accounting on and short TIME_WAIT, and
// gets exactly one flow per connection from the DESTROY events, carrying the
// bytes of both directions.
func TestPollerReportsEachConnectionOnceWithFinalCounters(t *testing.T) {
	ns := netnstest.New(t)
	ns.TrackConnections(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
	run := startPoller(t, ns, 18091, 200*time.Millisecond, time.Hour)
	ns.Traffic(t, 18091, 4, 3000, 0)
	run.waitFor(4, 15*time.Second)
	time.Sleep(time.Second) // any duplicate would arrive now
	got := run.stop()
	p := run.p
	if len(got) != 4 {
		t.Fatalf("%d flows for 4 connections: %+v", len(got), got)
	}
	if p.Ended < 4 || p.Vanished != 0 {
		t.Errorf("%d flows from DESTROY events, %d from vanished entries: the events were not used", p.Ended, p.Vanished)
	}
	ports := map[uint16]bool{}
	for _, f := range got {
		ports[f.SrcPort] = true
		// 3000 bytes each way plus TCP/IP headers of the handshake and teardown.
		if f.Bytes < 6000 || f.Bytes > 6000+40*60 || f.Packets < 6 {
			t.Errorf("flow counters %d bytes %d packets, want both directions of 3000 bytes: %+v", f.Bytes, f.Packets, f)
		}
	}
	if len(ports) != 4 {
		t.Errorf("source ports %v: want 4 distinct connections", ports)
	}
}

// TestReportsAddUp: a long-lived connection reported three times (open, open,
// destroyed) yields flows whose bytes and packets sum to its totals.
func TestReportsAddUp(t *testing.T) {
	p := &Poller{cfg: Config{Node: "n"}}
	st := &tracked{}
	var bytes, packets uint64
	for _, c := range []uint64{100, 250, 1000} {
		f := ct.Flow{CountersOrig: ct.Counter{Bytes: c, Packets: c / 10}, CountersReply: ct.Counter{Bytes: 2 * c, Packets: c / 5}}
		out, ok := p.delta(&f, st, time.Now())
		if !ok {
			t.Fatal("delta refused growing counters")
		}
		bytes += out.Bytes
		packets += out.Packets
	}
	if bytes != 3000 || packets != 300 {
		t.Errorf("reports sum to %d bytes %d packets, want 3000 and 300", bytes, packets)
	}
	shrunk := ct.Flow{CountersOrig: ct.Counter{Bytes: 5}}
	if _, ok := p.delta(&shrunk, st, time.Now()); ok {
		t.Error("counters that went backwards were reported")
	}
}

// TestDirectionFromTheNodesAddresses: a connection to one of the node's
// addresses is INGRESS, one from it EGRESS, forwarded and self traffic
// UNKNOWN; addresses are read again at every dump.
func TestDirectionFromTheNodesAddresses(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")}
	p := &Poller{cfg: Config{Node: "n"}, local: map[netip.Addr]bool{}}
	for _, a := range node {
		p.local[a] = true
	}
	conn := func(src, dst string) *ct.Flow {
		f := ct.NewFlow(6, 0, netip.MustParseAddr(src), netip.MustParseAddr(dst), 40000, 22, 0, 0)
		return &f
	}
	for _, c := range []struct {
		src, dst string
		want     schema.Direction
	}{
		{"192.168.1.5", "192.168.1.10", schema.DirectionIngress},
		{"fd00::5", "fd00::10", schema.DirectionIngress},
		{"192.168.1.10", "1.1.1.1", schema.DirectionEgress},
		{"192.168.1.5", "10.244.1.7", schema.DirectionUnknown}, // forwarded to a pod
		{"192.168.1.10", "192.168.1.10", schema.DirectionUnknown},
	} {
		if got, _ := p.delta(conn(c.src, c.dst), nil, time.Now()); got.Direction != c.want {
			t.Errorf("%s → %s: %s, want %s", c.src, c.dst, got.Direction, c.want)
		}
	}
}

// TestWithoutAccounting: with nf_conntrack_acct=0 (the kernel's default),
// Accounting says so, and a connection that stays open is still reported
// while open, once (it has no counters that could grow), and not again
// when it ends. With accounting on, Accounting says that too.
func TestWithoutAccounting(t *testing.T) {
	ns := netnstest.New(t)
	ns.TrackConnections(t)
	ns.Sysctl(t, AccountingSysctl+"=0")
	if on, err := Accounting(ns.FD); err != nil || on {
		t.Fatalf("Accounting with %s=0: %v, %v", AccountingSysctl, on, err)
	}
	run := startPoller(t, ns, 5353, 100*time.Millisecond, 300*time.Millisecond)
	// A long-lived UDP conversation, made through netlink (as conntrackd
	// does), so it lasts as long as the test wants.
	table, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	open := ct.NewFlow(17, 0, netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), 40000, 5353, 600, 0)
	if err := table.Create(open); err != nil {
		t.Fatalf("create a conntrack entry: %v", err)
	}
	run.waitFor(1, 5*time.Second)
	time.Sleep(time.Second) // three more reports would be due now
	if n := len(run.flows()); n != 1 {
		t.Fatalf("%d flows for one open connection without counters, want 1", n)
	}
	if err := table.Delete(open); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // its DESTROY event and the dumps after it
	got := run.stop()
	if n := len(got); n != 1 {
		t.Errorf("%d flows after the connection ended, want still 1: %+v", n, got)
	}
	if f := got[0]; f.SrcIP.String() != "10.9.0.1" || f.SrcPort != 40000 || f.Protocol != "UDP" || f.Bytes != 0 {
		t.Errorf("open connection's flow: %+v", f)
	}
	ns.Sysctl(t, AccountingSysctl+"=1")
	if on, err := Accounting(ns.FD); err != nil || !on {
		t.Fatalf("Accounting with %s=1: %v, %v", AccountingSysctl, on, err)
	}
}

// pollerRun is a Poller running over a namespace's conntrack table (dump
// and events sockets of its own), collecting the flows to one port.
type pollerRun struct {
	t    *testing.T
	p    *Poller
	mu   sync.Mutex
	got  []schema.Flow
	end  context.CancelFunc
	errc chan error
}

func startPoller(t *testing.T, ns *netnstest.NS, port uint16, interval, report time.Duration) *pollerRun {
	t.Helper()
	dial := func() *ct.Conn {
		c, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dump := dial()
	t.Cleanup(func() { dump.Close() })
	r := &pollerRun{t: t, errc: make(chan error, 1)}
	sink := ingest.SinkFunc(func(_ context.Context, flows ...schema.Flow) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, f := range flows {
			if f.DstPort == port {
				r.got = append(r.got, f)
			}
		}
		return nil
	})
	p, err := New(Config{Node: "node-1", Interval: interval, Report: report}, dump, dial(), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	ctx, end := context.WithCancel(context.Background())
	r.end = end
	t.Cleanup(end)
	go func() { r.errc <- r.p.Run(ctx) }()
	return r
}

func (r *pollerRun) flows() []schema.Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]schema.Flow(nil), r.got...)
}

// waitFor waits until n flows arrived or the timeout passed.
func (r *pollerRun) waitFor(n int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); len(r.flows()) < n && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the poller and returns the flows collected.
func (r *pollerRun) stop() []schema.Flow {
	r.t.Helper()
	r.end()
	if err := <-r.errc; err != nil {
		r.t.Fatal(err)
	}
	return r.flows()
}

// TestNewRefusesMissingDependencies: New needs the dump socket and a sink,
// and fills the defaults of a zero Config.
func TestNewRefusesMissingDependencies(t *testing.T) {
	sink := ingest.SinkFunc(func(context.Context, ...schema.Flow) error { return nil })
	if _, err := New(DefaultConfig(), nil, nil, sink, nil); err == nil {
		t.Error("a poller without a netlink socket was accepted")
	}
	if _, err := New(DefaultConfig(), &ct.Conn{}, nil, nil, nil); err == nil {
		t.Error("a poller without a sink was accepted")
	}
	p, err := New(Config{Node: "n"}, &ct.Conn{}, nil, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); p.cfg.Interval != d.Interval || p.cfg.Report != d.Report {
		t.Errorf("zero Config became %+v, want the defaults %+v", p.cfg, d)
	}
}
