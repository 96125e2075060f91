// Package hostfw writes a node's host firewall from the traffic its
// conntrack table saw: an nftables ruleset in the style of the usual
// default-deny server firewall (table inet flowwarden, input policy drop,
// established/related and loopback accepted), where every observed service
// port is opened only to the sources that were seen using it, with a counter
// and a comment carrying the evidence. CNI and overlay traffic is left alone.
//
// One Ruleset value is rendered two ways that mean the same thing: as an
// `nft -f` file (Text) and as netlink messages (Apply), which installs it
// atomically after a dry run in a scratch network namespace and rolls back
// unless the operator confirms in time.
package hostfw

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TableName is the nftables table flowwarden owns (family inet). Nothing else
// on the host is touched.
const TableName = "flowwarden"

// Config says which traffic is the node's own inbound traffic and how to
// summarise its sources.
type Config struct {
	// Node, when set, keeps only flows observed on this node.
	Node string
	// Addresses of the node: flows to these are inbound to the host. When
	// empty, the node's inbound flows are those its conntrack poller
	// recorded as INGRESS (to one of its addresses at the time), and the
	// ruleset's Addresses are the destinations they had.
	Addresses []netip.Prefix
	// PodCIDRs are the cluster's pod ranges: their traffic is the CNI's and
	// is accepted without looking at ports.
	PodCIDRs []netip.Prefix
	// CNIInterfaces are interface names (a trailing * matches a prefix)
	// whose traffic is the CNI's and is left alone.
	CNIInterfaces []string
	// OverlayUDPPorts are the tunnel ports of the overlay (VXLAN, Geneve,
	// WireGuard): accepted from NodeCIDRs, or from anywhere if none is given.
	OverlayUDPPorts []uint16
	// NodeCIDRs are the ranges the cluster's nodes are in: the only sources
	// the overlay's tunnel ports accept when set (an open VXLAN port lets
	// anyone inject packets into the pod network).
	NodeCIDRs []netip.Prefix
	// MinFlows is how many flows a (port, source) needs before it is allowed.
	MinFlows uint64
	// CollapseHosts: when at least this many hosts of one /24 (IPv6: /64)
	// used a port, the rule allows the /24 instead of each host. 0: never.
	CollapseHosts int
}

// DefaultConfig has the interface names and overlay ports of the common CNIs
// (Cilium, Calico, Flannel, Weave, kube-router, bridge/ptp plugins).
func DefaultConfig() Config {
	return Config{
		CNIInterfaces:   []string{"cilium_*", "lxc*", "cali*", "tunl*", "vxlan.calico", "flannel*", "cni*", "cbr0", "weave", "kube-bridge", "veth*", "genev_sys_*", "vxlan_sys_*"},
		OverlayUDPPorts: []uint16{4789, 6081, 8472, 51820, 51871},
		MinFlows:        1,
		CollapseHosts:   4,
	}
}

// Rule is one rule of the input chain. Zero fields do not match; the order of
// the fields is the order of the matches in the rule.
type Rule struct {
	CtStates []string     // "established", "related", "invalid"
	Iif      string       // exact interface (by index at load time): "lo"
	Iifname  string       // interface name; a trailing * matches a prefix
	Src      netip.Prefix // source address or range (decides ip/ip6)
	Protocol string       // "tcp", "udp", "sctp", "icmp", "ipv6-icmp"
	Port     uint16       // destination port (tcp/udp/sctp)
	Counter  bool
	Verdict  string // "accept" or "drop"
	Comment  string

	// Evidence behind an observed-traffic rule (not rendered but in Comment).
	Flows uint64
	Hosts int
	First time.Time
	Last  time.Time
}

// Ruleset is the input chain of table inet flowwarden, policy drop.
type Ruleset struct {
	Node      string
	Addresses []netip.Prefix
	Rules     []Rule
	// Observed counts the inbound flows the rules were made from; Ignored
	// counts flows that were not the node's inbound traffic.
	Observed, Ignored uint64
	First, Last       time.Time
}

// Builder accumulates flows; Build writes the ruleset.
type Builder struct {
	cfg     Config
	ports   map[portKey]map[netip.Addr]*evidence
	learned map[netip.Addr]bool // node addresses seen as destinations, without cfg.Addresses
	rs      Ruleset
}

type portKey struct {
	proto string
	port  uint16
}

type evidence struct {
	flows       uint64
	first, last time.Time
}

// NewBuilder checks the configuration.
func NewBuilder(cfg Config) (*Builder, error) {
	for _, name := range cfg.CNIInterfaces {
		if base := strings.TrimSuffix(name, "*"); base == "" || len(name) > 15 || strings.ContainsAny(base, "*\" ") {
			return nil, fmt.Errorf("host firewall: bad interface name %q (at most 15 characters, optional trailing *)", name)
		}
	}
	if cfg.MinFlows == 0 {
		cfg.MinFlows = 1
	}
	return &Builder{cfg: cfg, ports: map[portKey]map[netip.Addr]*evidence{}, learned: map[netip.Addr]bool{},
		rs: Ruleset{Node: cfg.Node, Addresses: cfg.Addresses}}, nil
}

// inbound tells whether f is traffic to the node itself: by the configured
// addresses, or else by the direction the node recorded.
func (b *Builder) inbound(f *schema.Flow) bool {
	if len(b.cfg.Addresses) == 0 {
		return f.Direction == schema.DirectionIngress
	}
	return containsAddr(b.cfg.Addresses, f.DstIP) && !containsAddr(b.cfg.Addresses, f.SrcIP)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var l4 = map[string]string{"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "ICMPv4": "icmp", "ICMPv6": "ipv6-icmp"}

// Add takes one flow; flows that are not inbound to the node are counted as
// ignored.
func (b *Builder) Add(f *schema.Flow) {
	proto, known := l4[f.Protocol]
	switch {
	case b.cfg.Node != "" && f.Node != b.cfg.Node,
		f.IsReply, f.Verdict == schema.VerdictDropped, !known,
		!b.inbound(f), !f.SrcIP.IsValid(), f.SrcIP.IsLoopback(),
		containsAddr(b.cfg.PodCIDRs, f.SrcIP):
		b.rs.Ignored++
		return
	}
	if len(b.cfg.Addresses) == 0 && !b.learned[f.DstIP] {
		b.learned[f.DstIP] = true
		b.rs.Addresses = append(b.rs.Addresses, netip.PrefixFrom(f.DstIP, f.DstIP.BitLen()))
	}
	port := f.DstPort
	if proto == "icmp" || proto == "ipv6-icmp" {
		port = 0
	}
	if proto == "udp" && slices.Contains(b.cfg.OverlayUDPPorts, port) {
		b.rs.Ignored++ // accepted anyway
		return
	}
	k := portKey{proto, port}
	srcs := b.ports[k]
	if srcs == nil {
		srcs = map[netip.Addr]*evidence{}
		b.ports[k] = srcs
	}
	e := srcs[f.SrcIP]
	if e == nil {
		e = &evidence{first: f.Time, last: f.Time}
		srcs[f.SrcIP] = e
	}
	e.flows++
	e.first = minTime(e.first, f.Time)
	e.last = maxTime(e.last, f.Time)
	b.rs.Observed++
	if b.rs.First.IsZero() || f.Time.Before(b.rs.First) {
		b.rs.First = f.Time
	}
	b.rs.Last = maxTime(b.rs.Last, f.Time)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Build returns the ruleset: the fixed head (conntrack state, loopback, CNI
// and overlay, ICMPv6 neighbour discovery) and one counted accept per
// observed port and source, ending in a counted drop.
func (b *Builder) Build() *Ruleset {
	rs := b.rs
	rs.Addresses = slices.Clone(rs.Addresses)
	slices.SortFunc(rs.Addresses, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	rs.Rules = []Rule{
		{CtStates: []string{"established", "related"}, Verdict: "accept"},
		{CtStates: []string{"invalid"}, Verdict: "drop"},
		{Iif: "lo", Verdict: "accept"},
	}
	for _, name := range b.cfg.CNIInterfaces {
		rs.Rules = append(rs.Rules, Rule{Iifname: name, Verdict: "accept", Comment: "CNI/overlay: left alone"})
	}
	for _, p := range b.cfg.PodCIDRs {
		rs.Rules = append(rs.Rules, Rule{Src: p.Masked(), Verdict: "accept", Comment: "pod network: left alone"})
	}
	for _, port := range b.cfg.OverlayUDPPorts {
		if len(b.cfg.NodeCIDRs) == 0 {
			rs.Rules = append(rs.Rules, Rule{Protocol: "udp", Port: port, Verdict: "accept", Comment: "overlay tunnel: left alone (give the node CIDRs to narrow it)"})
		}
		for _, p := range b.cfg.NodeCIDRs {
			rs.Rules = append(rs.Rules, Rule{Src: p.Masked(), Protocol: "udp", Port: port, Verdict: "accept", Comment: "overlay tunnel between nodes"})
		}
	}
	// IPv6 cannot work without neighbour discovery; ICMPv4 errors arrive as
	// related traffic.
	rs.Rules = append(rs.Rules, Rule{Protocol: "ipv6-icmp", Verdict: "accept", Comment: "IPv6 neighbour discovery and errors"})

	keys := make([]portKey, 0, len(b.ports))
	for k := range b.ports {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y portKey) int {
		if c := strings.Compare(x.proto, y.proto); c != 0 {
			return c
		}
		return int(x.port) - int(y.port)
	})
	for _, k := range keys {
		rs.Rules = append(rs.Rules, b.portRules(k)...)
	}
	rs.Rules = append(rs.Rules, Rule{Counter: true, Verdict: "drop", Comment: "flowwarden: not observed"})
	return &rs
}

// portRules groups a port's sources by /24 (IPv6 /64) and writes one rule
// per host, or one per range where CollapseHosts hosts of it were seen.
func (b *Builder) portRules(k portKey) []Rule {
	type group struct {
		hosts []netip.Addr
	}
	groups := map[netip.Prefix]*group{}
	for a, e := range b.ports[k] {
		if e.flows < b.cfg.MinFlows {
			continue
		}
		bits := 24
		if a.Is6() {
			bits = 64
		}
		p, _ := a.Prefix(bits)
		if groups[p] == nil {
			groups[p] = &group{}
		}
		groups[p].hosts = append(groups[p].hosts, a)
	}
	var out []Rule
	add := func(src netip.Prefix, hosts []netip.Addr) {
		r := Rule{Src: src, Protocol: k.proto, Port: k.port, Counter: true, Verdict: "accept", Hosts: len(hosts)}
		for _, h := range hosts {
			e := b.ports[k][h]
			r.Flows += e.flows
			if r.First.IsZero() || e.first.Before(r.First) {
				r.First = e.first
			}
			r.Last = maxTime(r.Last, e.last)
		}
		r.Comment = evidenceComment(r)
		out = append(out, r)
	}
	for p, g := range groups {
		if b.cfg.CollapseHosts > 0 && len(g.hosts) >= b.cfg.CollapseHosts {
			add(p, g.hosts)
			continue
		}
		for _, h := range g.hosts {
			add(netip.PrefixFrom(h, h.BitLen()), []netip.Addr{h})
		}
	}
	slices.SortFunc(out, func(x, y Rule) int {
		if c := x.Src.Addr().Compare(y.Src.Addr()); c != 0 {
			return c
		}
		return x.Src.Bits() - y.Src.Bits()
	})
	return out
}

// evidenceComment names the rule and its evidence within nft's 128-byte
// comment, so that its counter in nft_counters says which rule it is:
// "tcp/22 from 10.0.9.4/32: 17 flows from 1 host, 2026-11-02T00:00Z to ...".
func evidenceComment(r Rule) string {
	what := r.Protocol
	if r.Port != 0 {
		what += "/" + strconv.Itoa(int(r.Port))
	}
	s := fmt.Sprintf("%s from %s: %d flows from %d host", what, r.Src, r.Flows, r.Hosts)
	if r.Hosts != 1 {
		s += "s"
	}
	s += ", " + r.First.UTC().Format("2006-01-02T15:04Z") + " to " + r.Last.UTC().Format("2006-01-02T15:04Z")
	if len(s) > 127 {
		s = s[:127]
	}
	return s
}
