package conntrack

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

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
	dump, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer dump.Close()
	events, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []schema.Flow
	p := &Poller{Conn: dump, Events: events, Node: "node-1", Interval: 200 * time.Millisecond, Report: time.Hour,
		Sink: func(flows []schema.Flow) error {
			mu.Lock()
			defer mu.Unlock()
			for _, f := range flows {
				if f.DstPort == 18091 {
					got = append(got, f)
				}
			}
			return nil
		}}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	ns.Traffic(t, 18091, 4, 3000, 0)
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // any duplicate would arrive now
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
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
	p := &Poller{Node: "n"}
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
	p := &Poller{Node: "n", local: map[netip.Addr]bool{}}
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
	dump, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer dump.Close()
	events, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	// A long-lived UDP conversation, made through netlink (as conntrackd
	// does), so it lasts as long as the test wants.
	open := ct.NewFlow(17, 0, netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), 40000, 5353, 600, 0)
	if err := dump.Create(open); err != nil {
		t.Fatalf("create a conntrack entry: %v", err)
	}
	var mu sync.Mutex
	var got []schema.Flow
	p := &Poller{Conn: dump, Events: events, Node: "node-1", Interval: 100 * time.Millisecond, Report: 300 * time.Millisecond,
		Sink: func(flows []schema.Flow) error {
			mu.Lock()
			defer mu.Unlock()
			for _, f := range flows {
				if f.DstPort == 5353 {
					got = append(got, f)
				}
			}
			return nil
		}}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	for deadline := time.Now().Add(5 * time.Second); count() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // three more reports would be due now
	if n := count(); n != 1 {
		t.Fatalf("%d flows for one open connection without counters, want 1", n)
	}
	if err := dump.Delete(open); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // its DESTROY event and the dumps after it
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
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
