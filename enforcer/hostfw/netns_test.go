package hostfw

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/flowwarden/flowwarden/ingest/conntrack"
	"github.com/flowwarden/flowwarden/ingest/netnstest"
	nftcounters "github.com/flowwarden/flowwarden/ingest/nftables"
	"github.com/flowwarden/flowwarden/schema"
)

func TestMain(m *testing.M) {
	RunGuardIfRequested() // the dry run's user-namespace child is this binary
	netnstest.Main(m)
}

const (
	servedPort = 18100 // the port the client uses while we observe
	quietPort  = 18101 // listening too, but nobody used it
)

func nftConn(t *testing.T, ns *netnstest.NS) *nftables.Conn {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// observe runs real traffic from the client to the served port and builds
// the ruleset from the node's conntrack table.
func observe(t *testing.T, p *netnstest.Pair) *Ruleset {
	t.Helper()
	p.Node.TrackConnections(t)
	p.Node.Serve(t, servedPort, quietPort)
	if err := p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, servedPort), 3, 1024); err != nil {
		t.Fatal(err)
	}
	rs := fromConntrack(t, p)
	if got := observedRules(rs); len(got) != 1 || !strings.HasPrefix(got[0], "ip saddr 10.199.0.2 tcp dport 18100 counter accept comment \"tcp/18100 from 10.199.0.2/32: 3 flows from 1 host") {
		t.Fatalf("observed rules: %q", got)
	}
	return rs
}

// fromConntrack builds the node's ruleset from its conntrack table now.
func fromConntrack(t *testing.T, p *netnstest.Pair) *Ruleset {
	t.Helper()
	ctc, err := ct.Dial(&netlink.Config{NetNS: p.Node.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer ctc.Close()
	flows, err := conntrack.Dump(ctc, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Node = "node-1"
	cfg.Addresses = []netip.Prefix{netip.PrefixFrom(p.NodeAddr, 32)}
	b, err := NewBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range flows {
		b.Add(&flows[i])
	}
	return b.Build()
}

func reachable(p *netnstest.Pair, port uint16) error {
	return p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, port), 1, 64)
}

func counter(t *testing.T, conn *nftables.Conn, comment string) schema.CounterSample {
	t.Helper()
	samples, err := nftcounters.Read(conn, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if s.Table == TableName && strings.HasPrefix(s.Comment, comment) {
			return s
		}
	}
	t.Fatalf("no counter with comment %q", comment)
	return schema.CounterSample{}
}

// TestGeneratedRulesetEnforcesObservedTraffic is the host layer end to end:
// traffic over a veth pair is seen by conntrack, the generated ruleset is
// applied (dry run, then the real namespace), the observed traffic still
// flows, and a connection to a listening port nobody used is dropped.
func TestGeneratedRulesetEnforcesObservedTraffic(t *testing.T) {
	p := netnstest.NewPair(t)
	rs := observe(t, p)
	if err := reachable(p, quietPort); err != nil {
		t.Fatalf("before the firewall the quiet port should answer: %v", err)
	}
	conn := nftConn(t, p.Node)
	confirmNow := func(context.Context) error { return nil }
	if err := Apply(context.Background(), conn, rs, 5*time.Second, confirmNow, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := reachable(p, servedPort); err != nil {
		t.Errorf("observed traffic blocked by the generated ruleset: %v", err)
	}
	if err := reachable(p, quietPort); err == nil {
		t.Error("a connection to the never-observed port got through")
	}
	if c := counter(t, conn, "tcp/18100 from 10.199.0.2/32: 3 flows"); c.Packets == 0 {
		t.Errorf("the observed port's counter did not move: %+v", c)
	}
	if c := counter(t, conn, "flowwarden: not observed"); c.Packets == 0 || !c.Drop {
		t.Errorf("the drop counter did not count the refused SYNs: %+v", c)
	}
}

// TestRollbackRestoresThePreviousRuleset: an earlier flowwarden table is in
// force, a new ruleset is applied and never confirmed; after the timeout the
// earlier table is back, rule for rule, and so is its behaviour.
func TestRollbackRestoresThePreviousRuleset(t *testing.T) {
	p := netnstest.NewPair(t)
	rs := observe(t, p)
	conn := nftConn(t, p.Node)

	// The earlier ruleset allows only the quiet port.
	earlier := &Ruleset{Rules: []Rule{
		{CtStates: []string{"established", "related"}, Verdict: "accept"},
		{Src: netip.MustParsePrefix("10.199.0.0/24"), Protocol: "tcp", Port: quietPort, Counter: true, Verdict: "accept", Comment: "earlier"},
	}}
	if err := Install(conn, earlier); err != nil {
		t.Fatal(err)
	}
	before, err := Describe(conn)
	if err != nil {
		t.Fatal(err)
	}
	if reachable(p, servedPort) == nil || reachable(p, quietPort) != nil {
		t.Fatal("the earlier ruleset does not behave as written")
	}

	var during error
	waitForever := func(ctx context.Context) error {
		during = reachable(p, servedPort) // the new ruleset is live meanwhile
		<-ctx.Done()
		return ctx.Err()
	}
	err = Apply(context.Background(), conn, rs, 3*time.Second, waitForever, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("unconfirmed apply: %v", err)
	}
	if during != nil {
		t.Errorf("while waiting for confirmation the new ruleset was not in force: %v", during)
	}
	after, err := Describe(conn)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("rollback did not restore the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if reachable(p, servedPort) == nil || reachable(p, quietPort) != nil {
		t.Error("after rollback the earlier behaviour is not back")
	}

	// With no flowwarden table before, rollback removes it again.
	if err := (&Snapshot{}).Restore(conn); err != nil {
		t.Fatal(err)
	}
	err = Apply(context.Background(), conn, rs, 200*time.Millisecond, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatal(err)
	}
	if d, _ := Describe(conn); !strings.HasPrefix(d, "(no table") {
		t.Errorf("rollback to nothing left:\n%s", d)
	}
}

// TestTextAndNetlinkAgree loads the nft -f file with the nft tool in one
// namespace and the same ruleset through netlink in another: `nft list`
// prints the same table for both.
func TestTextAndNetlinkAgree(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("this test needs the nft tool (apt install nftables)")
	}
	cfg := DefaultConfig()
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32"), netip.MustParsePrefix("fd00:1::10/128")}
	cfg.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")}
	cfg.NodeCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/22")}
	b, _ := NewBuilder(cfg)
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, f := range []struct {
		src, dst, proto string
		port            uint16
	}{
		{"192.168.1.5", "192.168.1.10", "TCP", 22}, {"192.168.1.5", "192.168.1.10", "ICMPv4", 0},
		{"192.168.2.1", "192.168.1.10", "TCP", 10250}, {"192.168.2.2", "192.168.1.10", "TCP", 10250},
		{"192.168.2.3", "192.168.1.10", "TCP", 10250}, {"192.168.2.4", "192.168.1.10", "TCP", 10250},
		{"fd00:1::99", "fd00:1::10", "TCP", 9100}, {"192.168.3.3", "192.168.1.10", "UDP", 53}, {"192.168.3.3", "192.168.1.10", "SCTP", 3868},
	} {
		fl := ctFlow("", f.src, f.dst, f.proto, f.port, t0)
		b.Add(&fl)
	}
	rs := b.Build()
	// and a prefix that is not byte-aligned
	rs.Rules = append(rs.Rules[:len(rs.Rules)-1], Rule{Src: netip.MustParsePrefix("10.98.0.0/15"), Protocol: "tcp", Port: 443, Counter: true, Verdict: "accept"}, rs.Rules[len(rs.Rules)-1])

	fromText, fromNetlink := netnstest.New(t), netnstest.New(t)
	file := filepath.Join(t.TempDir(), "host.nft")
	var text bytes.Buffer
	if err := rs.WriteText(&text, t0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, text.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", fromText.Name, "nft", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("nft -f rejected the generated file: %v: %s\n%s", err, out, text.String())
	}
	if err := Install(nftConn(t, fromNetlink), rs); err != nil {
		t.Fatal(err)
	}
	list := func(ns *netnstest.NS) string {
		out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "table", "inet", TableName).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		return string(out)
	}
	a, b2 := list(fromText), list(fromNetlink)
	if a != b2 {
		t.Errorf("nft lists the two loads differently:\nfrom the file:\n%s\nthrough netlink:\n%s", a, b2)
	}
	// Loading the file again replaces the table instead of appending to it.
	if out, err := exec.Command("ip", "netns", "exec", fromText.Name, "nft", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("second nft -f: %v: %s", err, out)
	}
	if again := list(fromText); again != a {
		t.Errorf("loading the file twice changed the table:\n%s", again)
	}
	// Netlink install reads back as the same number of rules.
	if n, err := DryRun(rs); err != nil || n != len(rs.Rules) {
		t.Errorf("dry run: %d rules, %v", n, err)
	}
}

// TestRedirectedPortIsAllowedWhereTheInputChainSeesIt: the node redirects
// port 18300 to 18100 (as kube-proxy's NodePorts and local redirects do).
// conntrack's reply tuple names 18100, the port the input chain sees after
// the redirect, so the generated rule opens 18100 and connections to 18300
// keep working under the firewall.
func TestRedirectedPortIsAllowedWhereTheInputChainSeesIt(t *testing.T) {
	p := netnstest.NewPair(t)
	p.Node.TrackConnections(t)
	conn := nftConn(t, p.Node)
	nat := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "redirect"})
	ch := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: nat, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	conn.AddRule(&nftables.Rule{Table: nat, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(18300)},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(servedPort)},
		&expr.Redir{RegisterProtoMin: 1},
	}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	p.Node.Serve(t, servedPort, quietPort)
	if err := p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, 18300), 2, 512); err != nil {
		t.Fatal(err)
	}
	rs := fromConntrack(t, p)
	if got := observedRules(rs); len(got) != 1 || !strings.HasPrefix(got[0], "ip saddr 10.199.0.2 tcp dport 18100 ") {
		t.Fatalf("rules for the redirected connections: %q", got)
	}
	if err := Apply(context.Background(), conn, rs, 5*time.Second, func(context.Context) error { return nil }, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := reachable(p, 18300); err != nil {
		t.Errorf("the redirected port is blocked by the generated ruleset: %v", err)
	}
	if err := reachable(p, quietPort); err == nil {
		t.Error("the never-used port answers")
	}
}
