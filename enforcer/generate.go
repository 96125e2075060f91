package enforcer

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flowwarden/flowwarden/schema"
)

// Config steers policy generation. Guardrails (metadata services, system
// namespaces) cannot be switched off.
type Config struct {
	// MinFlows is the evidence an edge needs to be allowed (default 1).
	MinFlows uint64
	// MaxPrefixV4 and MaxPrefixV6 bound how far addresses are aggregated:
	// no ipBlock is wider than /24 (IPv4) or /64 (IPv6) by default.
	MaxPrefixV4, MaxPrefixV6 int
	// SystemNamespaces get no generated policies, and tenants get no access
	// into them beyond DNS.
	SystemNamespaces []string
	// DNSNamespace and DNSLabels select the cluster DNS pods.
	DNSNamespace string
	DNSLabels    map[string]string
	// MonitoringNamespace and MonitoringLabels, when set, select the
	// scraper allowed into every workload.
	MonitoringNamespace string
	MonitoringLabels    map[string]string
	// MetadataAddrs are never allowed, and are excepted from every ipBlock.
	MetadataAddrs []netip.Addr
	// NamePrefix prefixes generated policy names.
	NamePrefix string
	// Flagged are the detectors' findings over the same traffic: the
	// observed edges that are evidence of one (HoldBackRule) are held
	// back, not allowed, and listed in Skipped with their Flags. Nil
	// learns from all observed traffic.
	Flagged []schema.Finding
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MinFlows: 1, MaxPrefixV4: 24, MaxPrefixV6: 64,
		SystemNamespaces: []string{"kube-system", "kube-public", "kube-node-lease"},
		DNSNamespace:     "kube-system", DNSLabels: map[string]string{"k8s-app": "kube-dns"},
		MetadataAddrs: []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("169.254.170.2"),
			netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200")},
		NamePrefix: "flowwarden-",
	}
}

// Skipped is an observed edge left out of the policies on purpose.
type Skipped struct {
	Edge   Edge
	Stats  EdgeStats
	Reason string
	// Flags are the findings the edge is evidence of, when it was held
	// back for them (Config.Flagged).
	Flags []Flag
}

// RuleEvidence backs one allow with what was observed.
type RuleEvidence struct {
	Policy    string // namespace/name
	Direction string // ingress or egress
	Peer      string
	Port      string
	Stats     EdgeStats
}

// Result is a generated policy set with its evidence.
type Result struct {
	Policies []networkingv1.NetworkPolicy
	Evidence []RuleEvidence
	Skipped  []Skipped
	// Warnings name generation choices a reviewer should look at.
	Warnings []string
	// BlastRadius, when the caller measured it (ComputeBlastRadius), goes
	// into the pull request body.
	BlastRadius *BlastRadius
}

// Generate writes the least-privilege policies for the observed graph: per
// namespace a default deny of ingress and egress, and per workload a policy
// with exactly the observed peers and ports, plus DNS.
func Generate(g *Graph, cfg Config) (*Result, error) {
	g.Settle()
	if cfg.MaxPrefixV4 < 1 || cfg.MaxPrefixV4 > 32 || cfg.MaxPrefixV6 < 1 || cfg.MaxPrefixV6 > 128 {
		return nil, fmt.Errorf("prefix bounds /%d and /%d out of range", cfg.MaxPrefixV4, cfg.MaxPrefixV6)
	}
	system := map[string]bool{}
	for _, ns := range cfg.SystemNamespaces {
		system[ns] = true
	}
	metadata := map[netip.Addr]bool{}
	for _, a := range cfg.MetadataAddrs {
		metadata[a.Unmap()] = true
	}
	// Selectors per namespace.
	byNS := map[string][]Workload{}
	for _, w := range g.Workloads {
		byNS[w.Namespace] = append(byNS[w.Namespace], *w)
	}
	sel := map[string]map[string]string{}
	for _, ws := range byNS {
		for k, v := range selectors(ws) {
			sel[k] = v
		}
	}
	res := &Result{}
	type ruleKey struct {
		workload, direction string
	}
	// peers[workload/direction][peer] → ports (as "proto/port") with evidence.
	peers := map[ruleKey]map[string]*peerRule{}
	addRule := func(k ruleKey, pr *peerRule, port string, st EdgeStats) {
		m := peers[k]
		if m == nil {
			m = map[string]*peerRule{}
			peers[k] = m
		}
		id := pr.id()
		if old, ok := m[id]; ok {
			pr = old
		} else {
			m[id] = pr
		}
		if pr.ports == nil {
			pr.ports = map[string]EdgeStats{}
		}
		s := pr.ports[port]
		s.Flows += st.Flows
		if s.First.IsZero() || st.First.Before(s.First) {
			s.First = st.First
		}
		if st.Last.After(s.Last) {
			s.Last = st.Last
		}
		pr.ports[port] = s
	}
	skip := func(e Edge, st EdgeStats, why string) {
		res.Skipped = append(res.Skipped, Skipped{Edge: e, Stats: st, Reason: why})
	}
	isDNS := func(p Peer, port uint16) bool {
		if port != 53 || p.Kind != PeerWorkload {
			return false
		}
		w := g.Workloads[p.Workload]
		if w == nil || w.Namespace != cfg.DNSNamespace {
			return false
		}
		for k, v := range cfg.DNSLabels {
			if w.Labels[k] != v {
				return false
			}
		}
		return true
	}
	// The configured scraper may reach metrics ports anywhere, system
	// namespaces included.
	isMonitoring := func(p Peer) bool {
		w := g.Workloads[p.Workload]
		if cfg.MonitoringNamespace == "" || w == nil || w.Namespace != cfg.MonitoringNamespace {
			return false
		}
		for k, v := range cfg.MonitoringLabels {
			if w.Labels[k] != v {
				return false
			}
		}
		return true
	}
	flagged, unknown := flaggedEdges(g, cfg.Flagged)
	for _, d := range unknown {
		res.Warnings = append(res.Warnings, fmt.Sprintf("findings of detector %s hold back no edge: flowwarden does not know which connections they are about", d))
	}
	// heldAddrs are the addresses held back per rule: an aggregated
	// ipBlock of that rule must except them.
	heldAddrs := map[ruleKey][]netip.Addr{}
	var notHeld []string
	edges := make([]Edge, 0, len(g.Edges))
	for e := range g.Edges {
		edges = append(edges, e)
	}
	for _, e := range edges {
		st := *g.Edges[e]
		port := e.Protocol + "/" + strconv.Itoa(int(e.Port))
		fromNS, toNS := nsOf(e.From), nsOf(e.To)
		// Evidence of an attack is not learned, where a policy can deny it:
		// DNS is always allowed, the configured scraper into every
		// workload, and no policy is written for system namespaces.
		if flags := flagged[e]; len(flags) > 0 {
			fromPolicy := e.From.Kind == PeerWorkload && !system[fromNS]
			toPolicy := e.To.Kind == PeerWorkload && !system[toNS]
			// A scrape is allowed by the guardrail: neither its egress
			// nor the target's ingress may hold it back.
			scrape := e.To.Kind == PeerWorkload && isMonitoring(e.From)
			if !isDNS(e.To, e.Port) && !scrape && (fromPolicy || toPolicy) {
				res.Skipped = append(res.Skipped, Skipped{Edge: e, Stats: st, Reason: heldBackReason(flags), Flags: flags})
				if e.From.Kind == PeerWorkload && e.To.Kind != PeerWorkload {
					k := ruleKey{e.From.Workload, "egress"}
					heldAddrs[k] = append(heldAddrs[k], e.To.Addr.Unmap())
				}
				continue
			}
			notHeld = append(notHeld, fmt.Sprintf("%s is evidence of %s but cannot be held back: DNS, the monitoring scraper and system namespaces are always allowed",
				EdgeKey(e), flags[0]))
		}
		if st.Flows < cfg.MinFlows {
			skip(e, st, fmt.Sprintf("fewer than %d flows of evidence", cfg.MinFlows))
			continue
		}
		if (e.To.Kind != PeerWorkload) && metadata[e.To.Addr.Unmap()] {
			skip(e, st, "guardrail: the cloud metadata service is never allowed")
			continue
		}
		if e.From.Kind == PeerWorkload && !system[fromNS] && system[toNS] && !isDNS(e.To, e.Port) && !isMonitoring(e.From) {
			skip(e, st, "guardrail: no tenant access into system namespace "+toNS+" beyond DNS")
			continue
		}
		// The source's egress.
		if e.From.Kind == PeerWorkload && !system[fromNS] && !isDNS(e.To, e.Port) {
			addRule(ruleKey{e.From.Workload, "egress"}, peerFor(e.To, fromNS, g, sel, cfg, metadata), port, st)
		}
		// The destination's ingress.
		if e.To.Kind == PeerWorkload && !system[toNS] {
			addRule(ruleKey{e.To.Workload, "ingress"}, peerFor(e.From, toNS, g, sel, cfg, metadata), port, st)
		}
	}

	sort.Strings(notHeld)
	res.Warnings = append(res.Warnings, notHeld...)
	namespaces := map[string]bool{}
	for key := range g.Workloads {
		ns, _, _ := strings.Cut(key, "/")
		if !system[ns] {
			namespaces[ns] = true
		}
	}
	for _, ns := range sortedKeys(namespaces) {
		res.Policies = append(res.Policies, defaultDeny(ns, cfg))
	}
	for _, key := range sortedKeys(g.Workloads) {
		w := g.Workloads[key]
		if system[w.Namespace] {
			// No policy is written for it: its selector matters to no one.
			continue
		}
		if len(sel[key]) == 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("workload %s has no stable labels: its selector matches every pod of namespace %s", key, w.Namespace))
		}
		np := newPolicy(w.Namespace, cfg.NamePrefix+w.Name, sel[key])
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		name := w.Namespace + "/" + np.Name
		for _, pr := range mergeRules(peers[ruleKey{key, "ingress"}], cfg, metadata, heldAddrs[ruleKey{key, "ingress"}]) {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: pr.peers, Ports: pr.ports})
			res.Evidence = append(res.Evidence, pr.evidence(name, "ingress")...)
		}
		if cfg.MonitoringNamespace != "" {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: nsSelector(cfg.MonitoringNamespace),
				PodSelector:       &metav1.LabelSelector{MatchLabels: cfg.MonitoringLabels},
			}}})
		}
		np.Spec.Egress = append(np.Spec.Egress, dnsRule(cfg))
		for _, pr := range mergeRules(peers[ruleKey{key, "egress"}], cfg, metadata, heldAddrs[ruleKey{key, "egress"}]) {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: pr.peers, Ports: pr.ports})
			res.Evidence = append(res.Evidence, pr.evidence(name, "egress")...)
		}
		res.Policies = append(res.Policies, np)
	}
	sort.Slice(res.Skipped, func(i, j int) bool { return fmt.Sprint(res.Skipped[i].Edge) < fmt.Sprint(res.Skipped[j].Edge) })
	return res, nil
}

func nsOf(p Peer) string {
	if p.Kind != PeerWorkload {
		return ""
	}
	ns, _, _ := strings.Cut(p.Workload, "/")
	return ns
}

// peerRule is one peer of a rule (pod selectors, or addresses to be
// aggregated) with the ports observed to it.
type peerRule struct {
	peer  *networkingv1.NetworkPolicyPeer // nil for addresses
	addrs []netip.Addr
	label string
	ports map[string]EdgeStats
}

func (p *peerRule) id() string {
	if p.peer == nil {
		return "addr:" + p.addrs[0].String()
	}
	return p.label
}

func peerFor(p Peer, policyNS string, g *Graph, sel map[string]map[string]string, cfg Config, metadata map[netip.Addr]bool) *peerRule {
	if p.Kind != PeerWorkload {
		label := p.Addr.String()
		if p.Name != "" {
			label += " (" + strings.TrimSuffix(p.Name, ".") + ")"
		}
		return &peerRule{addrs: []netip.Addr{p.Addr.Unmap()}, label: label}
	}
	w := g.Workloads[p.Workload]
	np := &networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: sel[p.Workload]}}
	if w.Namespace != policyNS {
		np.NamespaceSelector = nsSelector(w.Namespace)
	}
	return &peerRule{peer: np, label: p.Workload}
}

func nsSelector(ns string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
}

type mergedRule struct {
	peers    []networkingv1.NetworkPolicyPeer
	ports    []networkingv1.NetworkPolicyPort
	labels   []string
	portKeys []string
	stats    []map[string]EdgeStats
}

func (m mergedRule) evidence(policy, dir string) []RuleEvidence {
	var out []RuleEvidence
	for i, l := range m.labels {
		for _, pk := range m.portKeys {
			if st, ok := m.stats[i][pk]; ok {
				out = append(out, RuleEvidence{Policy: policy, Direction: dir, Peer: l, Port: pk, Stats: st})
			}
		}
	}
	return out
}

// mergeRules groups peers that share the same ports into one rule each, and
// aggregates addresses into CIDRs no wider than the configured bounds; an
// aggregate that covers a held-back address (held) not among its own
// excepts it, as it does the metadata services.
func mergeRules(peers map[string]*peerRule, cfg Config, metadata map[netip.Addr]bool, held []netip.Addr) []mergedRule {
	byPorts := map[string]*mergedRule{}
	addrsByPorts := map[string][]*peerRule{}
	for _, id := range sortedKeys(peers) {
		pr := peers[id]
		keys := sortedKeys(pr.ports)
		sig := strings.Join(keys, ",")
		if pr.peer == nil {
			addrsByPorts[sig] = append(addrsByPorts[sig], pr)
			continue
		}
		m := byPorts[sig]
		if m == nil {
			m = &mergedRule{portKeys: keys, ports: toPorts(keys)}
			byPorts[sig] = m
		}
		m.peers = append(m.peers, *pr.peer)
		m.labels = append(m.labels, pr.label)
		m.stats = append(m.stats, pr.ports)
	}
	for sig, prs := range addrsByPorts {
		m := byPorts[sig]
		if m == nil {
			keys := strings.Split(sig, ",")
			m = &mergedRule{portKeys: keys, ports: toPorts(keys)}
			byPorts[sig] = m
		}
		var addrs []netip.Addr
		own := map[netip.Addr]bool{}
		for _, pr := range prs {
			addrs = append(addrs, pr.addrs...)
			m.labels = append(m.labels, pr.label)
			m.stats = append(m.stats, pr.ports)
			for _, a := range pr.addrs {
				own[a.Unmap()] = true
			}
		}
		excepted := map[netip.Addr]bool{}
		for a := range metadata {
			excepted[a] = true
		}
		for _, a := range held {
			if !own[a] {
				excepted[a] = true
			}
		}
		for _, p := range Aggregate(addrs, cfg.MaxPrefixV4, cfg.MaxPrefixV6) {
			block := &networkingv1.IPBlock{CIDR: p.String()}
			for _, a := range sortedAddrs(excepted) {
				if p.Contains(a) && p.Bits() < a.BitLen() {
					block.Except = append(block.Except, netip.PrefixFrom(a, a.BitLen()).String())
				}
			}
			m.peers = append(m.peers, networkingv1.NetworkPolicyPeer{IPBlock: block})
		}
	}
	var out []mergedRule
	for _, sig := range sortedKeys(byPorts) {
		out = append(out, *byPorts[sig])
	}
	return out
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	var out []netip.Addr
	for a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func toPorts(keys []string) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, k := range keys {
		proto, port, _ := strings.Cut(k, "/")
		n, _ := strconv.Atoi(port)
		p := corev1.Protocol(proto)
		v := intstr.FromInt32(int32(n))
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &p, Port: &v})
	}
	return out
}

// Aggregate covers the addresses with the fewest prefixes that are no wider
// than /maxV4 (/maxV6): addresses sharing a /maxV4 block are covered by
// their longest common prefix within it.
func Aggregate(addrs []netip.Addr, maxV4, maxV6 int) []netip.Prefix {
	groups := map[netip.Prefix][]netip.Addr{}
	for _, a := range addrs {
		a = a.Unmap()
		bits := maxV4
		if a.Is6() {
			bits = maxV6
		}
		p, _ := a.Prefix(bits)
		groups[p] = append(groups[p], a)
	}
	var out []netip.Prefix
	for block, as := range groups {
		bits := as[0].BitLen()
		for bits > block.Bits() {
			p, _ := as[0].Prefix(bits)
			all := true
			for _, a := range as[1:] {
				if !p.Contains(a) {
					all = false
					break
				}
			}
			if all {
				break
			}
			bits--
		}
		p, _ := as[0].Prefix(bits)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Addr() != out[j].Addr() {
			return out[i].Addr().Less(out[j].Addr())
		}
		return out[i].Bits() < out[j].Bits()
	})
	return out
}

func newPolicy(ns, name string, podLabels map[string]string) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "flowwarden"}},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: podLabels}},
	}
}

func defaultDeny(ns string, cfg Config) networkingv1.NetworkPolicy {
	np := newPolicy(ns, cfg.NamePrefix+"default-deny", nil)
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	// Every pod may still resolve names.
	np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{dnsRule(cfg)}
	return np
}

func dnsRule(cfg Config) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: nsSelector(cfg.DNSNamespace),
			PodSelector:       &metav1.LabelSelector{MatchLabels: cfg.DNSLabels},
		}},
		Ports: toPorts([]string{"TCP/53", "UDP/53"}),
	}
}
