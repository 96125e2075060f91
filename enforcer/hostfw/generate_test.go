package hostfw

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

func ctFlow(node, src, dst, proto string, port uint16, at time.Time) schema.Flow {
	return schema.Flow{Time: at, Node: node, Source: schema.SourceConntrack, Verdict: schema.VerdictForwarded,
		SrcIP: netip.MustParseAddr(src), DstIP: netip.MustParseAddr(dst), Protocol: proto, DstPort: port, SrcPort: 40000}
}

func observedRules(rs *Ruleset) []string {
	var out []string
	for _, r := range rs.Rules {
		if r.Hosts > 0 {
			out = append(out, r.String())
		}
	}
	return out
}

// TestBuilderKeepsOnlyInboundNodeTraffic runs twice: with the node's
// addresses given, and with none given but each flow's direction recorded
// by the node (as serve --conntrack does from its interfaces); both must
// make the same rules.
func TestBuilderKeepsOnlyInboundNodeTraffic(t *testing.T) {
	addrs := []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32"), netip.MustParsePrefix("fd00:1::10/128")}
	for _, given := range []bool{true, false} {
		name := "addresses given"
		if !given {
			name = "directions recorded"
		}
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Node = "node-a"
			if given {
				cfg.Addresses = addrs
			}
			rs := buildInboundExample(t, cfg, addrs, !given)
			if fmt.Sprint(rs.Addresses) != fmt.Sprint(addrs) {
				t.Errorf("ruleset addresses %v, want %v", rs.Addresses, addrs)
			}
		})
	}
}

func buildInboundExample(t *testing.T, cfg Config, node []netip.Prefix, markDirections bool) *Ruleset {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	cfg.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	b, err := NewBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	flows := []schema.Flow{
		// ssh from an admin host, twice
		ctFlow("node-a", "192.168.1.5", "192.168.1.10", "TCP", 22, t0),
		ctFlow("node-a", "192.168.1.5", "192.168.1.10", "TCP", 22, t0.Add(time.Hour)),
		// kubelet from four control-plane hosts in one /24: collapsed
		ctFlow("node-a", "192.168.2.1", "192.168.1.10", "TCP", 10250, t0),
		ctFlow("node-a", "192.168.2.2", "192.168.1.10", "TCP", 10250, t0),
		ctFlow("node-a", "192.168.2.3", "192.168.1.10", "TCP", 10250, t0),
		ctFlow("node-a", "192.168.2.4", "192.168.1.10", "TCP", 10250, t0),
		// ping and IPv6 node-exporter
		ctFlow("node-a", "192.168.1.5", "192.168.1.10", "ICMPv4", 0, t0),
		ctFlow("node-a", "fd00:1::99", "fd00:1::10", "TCP", 9100, t0),
		// not the node's inbound traffic:
		ctFlow("node-b", "192.168.1.5", "192.168.1.10", "TCP", 23, t0),     // another node
		ctFlow("node-a", "192.168.1.10", "192.168.1.5", "TCP", 443, t0),    // outbound
		ctFlow("node-a", "10.244.1.7", "192.168.1.10", "TCP", 10255, t0),   // pod network
		ctFlow("node-a", "192.168.1.7", "10.244.1.7", "TCP", 8080, t0),     // forwarded to a pod
		ctFlow("node-a", "192.168.1.11", "192.168.1.10", "UDP", 8472, t0),  // overlay
		ctFlow("node-a", "127.0.0.1", "192.168.1.10", "TCP", 2379, t0),     // loopback
		ctFlow("node-a", "192.168.1.10", "192.168.1.10", "TCP", 6443, t0),  // itself
		ctFlow("node-a", "192.168.1.6", "192.168.1.10", "proto-47", 0, t0), // GRE: unknown
		ctFlow("node-a", "192.168.1.6", "192.168.1.10", "TCP", 3306, t0),   // dropped below
		ctFlow("node-a", "192.168.1.6", "192.168.1.10", "TCP", 5432, t0),   // a reply below
		ctFlow("node-a", "203.0.113.9", "192.168.1.10", "TCP", 80, t0),
	}
	flows[16].Verdict = schema.VerdictDropped
	flows[17].IsReply = true
	for i := range flows {
		if toNode, fromNode := containsAddr(node, flows[i].DstIP), containsAddr(node, flows[i].SrcIP); markDirections && toNode != fromNode {
			flows[i].Direction = schema.DirectionEgress
			if toNode {
				flows[i].Direction = schema.DirectionIngress
			}
		}
		b.Add(&flows[i])
	}
	rs := b.Build()
	got := observedRules(rs)
	want := []string{
		`ip saddr 192.168.1.5 meta l4proto icmp counter accept comment "icmp from 192.168.1.5/32: 1 flows from 1 host, 2026-11-20T10:00Z to 2026-11-20T10:00Z"`,
		`ip saddr 192.168.1.5 tcp dport 22 counter accept comment "tcp/22 from 192.168.1.5/32: 2 flows from 1 host, 2026-11-20T10:00Z to 2026-11-20T11:00Z"`,
		`ip saddr 203.0.113.9 tcp dport 80 counter accept comment "tcp/80 from 203.0.113.9/32: 1 flows from 1 host, 2026-11-20T10:00Z to 2026-11-20T10:00Z"`,
		`ip6 saddr fd00:1::99 tcp dport 9100 counter accept comment "tcp/9100 from fd00:1::99/128: 1 flows from 1 host, 2026-11-20T10:00Z to 2026-11-20T10:00Z"`,
		`ip saddr 192.168.2.0/24 tcp dport 10250 counter accept comment "tcp/10250 from 192.168.2.0/24: 4 flows from 4 hosts, 2026-11-20T10:00Z to 2026-11-20T10:00Z"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("observed rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rs.Observed != 9 || rs.Ignored != 10 {
		t.Errorf("observed %d ignored %d, want 9 and 10", rs.Observed, rs.Ignored)
	}
	head := []string{`ct state established,related accept`, `ct state invalid drop`, `iif "lo" accept`}
	for i, h := range head {
		if rs.Rules[i].String() != h {
			t.Errorf("rule %d = %q, want %q", i, rs.Rules[i], h)
		}
	}
	last := rs.Rules[len(rs.Rules)-1]
	if last.String() != `counter drop comment "flowwarden: not observed"` {
		t.Errorf("last rule %q", last)
	}
	var text strings.Builder
	if err := rs.WriteText(&text, t0); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"table inet flowwarden {", "type filter hook input priority filter; policy drop;",
		`iifname "cilium_*" accept comment "CNI/overlay: left alone"`, `ip saddr 10.244.0.0/16 accept comment "pod network: left alone"`,
		`udp dport 8472 accept comment "overlay tunnel: left alone (give the node CIDRs to narrow it)"`, "delete table inet flowwarden\n"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("nft file lacks %q:\n%s", s, text.String())
		}
	}
	return rs
}

func TestBuilderRefusesBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	cfg.CNIInterfaces = []string{"a-very-long-interface-name"}
	if _, err := NewBuilder(cfg); err == nil {
		t.Error("a 26-character interface name was accepted")
	}
	for _, r := range []Rule{{Verdict: "maybe"}, {Port: 22, Verdict: "accept"}, {Protocol: "icmp", Port: 1, Verdict: "accept"},
		{Src: netip.MustParsePrefix("0.0.0.0/0"), Verdict: "accept"}, {Iif: "eth0", Verdict: "accept"}} {
		if _, err := r.exprs(); err == nil {
			t.Errorf("rule %q encoded without error", r)
		}
	}
}

func TestOverlayPortsOnlyFromNodes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32")}
	cfg.NodeCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	b, _ := NewBuilder(cfg)
	var overlay []string
	for _, r := range b.Build().Rules {
		if r.Protocol == "udp" && r.Hosts == 0 {
			overlay = append(overlay, r.String())
		}
	}
	if len(overlay) != 2*len(cfg.OverlayUDPPorts) || overlay[0] != `ip saddr 192.168.1.0/24 udp dport 4789 accept comment "overlay tunnel between nodes"` ||
		overlay[1] != `ip6 saddr fd00:1::/64 udp dport 4789 accept comment "overlay tunnel between nodes"` {
		t.Errorf("overlay rules: %q", overlay)
	}
}

func TestMinFlows(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	cfg.MinFlows = 2
	b, _ := NewBuilder(cfg)
	t0 := time.Now()
	for _, f := range []schema.Flow{ctFlow("n", "10.0.0.2", "10.0.0.1", "TCP", 22, t0), ctFlow("n", "10.0.0.2", "10.0.0.1", "TCP", 22, t0),
		ctFlow("n", "10.0.0.3", "10.0.0.1", "TCP", 22, t0)} {
		b.Add(&f)
	}
	got := observedRules(b.Build())
	if len(got) != 1 || !strings.HasPrefix(got[0], "ip saddr 10.0.0.2 tcp dport 22 ") {
		t.Errorf("with MinFlows 2: %q", got)
	}
}
