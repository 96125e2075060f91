package enforcer

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	k8sCiliumUtils "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/utils"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	policytypes "github.com/cilium/cilium/pkg/policy/types"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flowwarden/flowwarden/schema"
)

// Layer 3/4 of CiliumNetworkPolicies, judged with Cilium's semantics
// (docs.cilium.io, "Layer 3 Examples", "Layer 4 Examples", "Deny Policies",
// and pkg/policy of Cilium v1.20, read for the rules below):
//
//   - A policy is read as the agent reads it: Sanitize, then the same
//     translation (k8s/apis/cilium.io/utils.ParseToCiliumRule): the
//     endpointSelector of a CiliumNetworkPolicy is limited to its
//     namespace, and so is every fromEndpoints/toEndpoints selector that
//     names no namespace (`{}` is every pod of the policy's namespace;
//     in a clusterwide policy, every pod).
//   - Each ingress (egress) rule of a policy selecting an endpoint, even an
//     empty one (`ingress: [{}]`), puts that direction of the endpoint in
//     default deny, unless the policy says enableDefaultDeny false for it.
//     A direction in default deny allows what one of its rules allows.
//   - A rule allows a peer it selects (fromEndpoints, fromEntities,
//     fromCIDR, fromCIDRSet with except, toFQDNs...) on the ports of its
//     toPorts (none: every port); a rule with ports but no peer field
//     allows every peer on them; a rule with neither allows nothing, and a
//     peer field given as an empty list selects nothing.
//   - Deny rules (ingressDeny, egressDeny) win over every allow.
//   - CIDR and FQDN rules select addresses outside the cluster only (pods
//     and nodes have identities of their own); toFQDNs matches the DNS
//     names the flow carries for its destination.
//   - A flow needs the source's egress and the destination's ingress.
//
// Not judged (Unsupported lists them per policy; the rule then selects no
// peer): fromNodes/toNodes (node labels are not in flows), fromGroups/
// toGroups, toServices, fromRequires/toRequires, CIDR groups, named ports,
// and nodeSelector (host policies) as a subject.

// CiliumEndpoint is one end of a connection as Cilium's policy sees it.
type CiliumEndpoint struct {
	// Labels are the identity's labels (k8s:app=web,
	// k8s:io.kubernetes.pod.namespace=shop, reserved:world...).
	Labels labels.LabelArray
	// Pod says the end is a Cilium endpoint in a namespace, which policies
	// select; Namespace is its namespace.
	Pod       bool
	Namespace string
	// IP is its address; Names the DNS names seen for it (toFQDNs).
	IP    netip.Addr
	Names []string
}

func (e CiliumEndpoint) String() string {
	if e.Pod {
		if name := e.Labels.Get("k8s:" + podNameKey); name != "" {
			return e.Namespace + "/" + name
		}
	}
	return e.IP.String()
}

const podNameKey = "io.kubernetes.pod.name"

// world says the end is outside the cluster: what CIDR and FQDN rules select.
func (e CiliumEndpoint) world() bool {
	if e.Pod {
		return false
	}
	for _, l := range e.Labels {
		if l.Source == labels.LabelSourceReserved && !strings.HasPrefix(l.Key, labels.IDNameWorld) {
			return false
		}
	}
	return true
}

// CiliumEndpointOf is Cilium's view of a flow end: a pod with its labels
// (as Hubble gives them), a reserved identity (host, remote-node,
// kube-apiserver...), or an address outside the cluster.
func CiliumEndpointOf(e *schema.Endpoint, ip netip.Addr, names []string) CiliumEndpoint {
	out := CiliumEndpoint{IP: ip.Unmap(), Names: names}
	var ls labels.LabelArray
	for k, v := range e.Labels {
		src, key, ok := strings.Cut(k, ":")
		if !ok {
			src, key = labels.LabelSourceK8s, k
		}
		ls = append(ls, labels.NewLabel(key, v, src))
	}
	switch {
	case isWorkload(e):
		out.Pod, out.Namespace = true, e.Namespace
		if ls.Get("k8s:"+podNamespaceKey) == "" {
			ls = append(ls, labels.NewLabel(podNamespaceKey, e.Namespace, labels.LabelSourceK8s))
		}
		if e.Pod != "" && ls.Get("k8s:"+podNameKey) == "" {
			ls = append(ls, labels.NewLabel(podNameKey, e.Pod, labels.LabelSourceK8s))
		}
	case e.WorkloadKind == schema.KindReserved && e.Workload != "" && !ls.Has("reserved:"+e.Workload):
		ls = append(ls, labels.NewLabel(e.Workload, "", labels.LabelSourceReserved))
	case e.WorkloadKind != schema.KindReserved && len(ls) == 0:
		ls = append(ls, labels.NewLabel(labels.IDNameWorld, "", labels.LabelSourceReserved))
	}
	out.Labels = ls.Sort()
	return out
}

const podNamespaceKey = "io.kubernetes.pod.namespace"

// CiliumEvaluator decides whether CiliumNetworkPolicies (and
// CiliumClusterwideNetworkPolicies) allow a connection at layer 3/4.
type CiliumEvaluator struct {
	rules []ciliumRule
	// Unsupported names, per policy, what is not judged (see above).
	Unsupported []string
}

type ciliumRule struct {
	policy    string // Key of the policy
	namespace string // "" for a clusterwide policy
	spec      int    // index of the rule in specs (0 for spec)
	subject   *policytypes.LabelSelector
	rule      *api.Rule
	ingress   []ciliumEntry
	egress    []ciliumEntry
	inDeny    []ciliumEntry
	egDeny    []ciliumEntry
	ddIngress bool // its ingress rules put the subject in default deny
	ddEgress  bool
}

// ciliumEntry is one ingress/egress (deny) rule, compiled.
type ciliumEntry struct {
	index     int
	none      bool // a peer field is an empty list: selects nobody
	anyPeer   bool // no peer field: every peer (on the ports)
	endpoints []*policytypes.LabelSelector
	entities  []api.Entity // those judged by the peer's kind (world, cluster, all)
	// entitySelectors select the reserved identities of the other entities.
	entitySelectors []*policytypes.LabelSelector
	cidrs           []cidrExcept
	fqdns           []*regexp.Regexp
	ports           []api.PortProtocol
	l4              bool // the rule restricts ports (toPorts or icmps)
	text            string
}

type cidrExcept struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

// NewCiliumEvaluator reads the policies as Cilium's agent does; a policy
// Cilium would refuse is an error.
func NewCiliumEvaluator(policies []CiliumNetworkPolicy) (*CiliumEvaluator, error) {
	e := &CiliumEvaluator{}
	quiet := slog.New(slog.DiscardHandler)
	for pi := range policies {
		p := &policies[pi]
		specs := p.Specs
		if p.Spec != nil {
			specs = append(api.Rules{p.Spec}, specs...)
		}
		var unsupported []string
		for si, raw := range specs {
			r := raw.DeepCopy()
			if nodesToNone(r) {
				unsupported = append(unsupported, "fromNodes/toNodes (select nobody here)")
			}
			if err := r.Sanitize(); err != nil {
				return nil, fmt.Errorf("%s %s: %w", p.Kind, p.Key(), err)
			}
			if r.NodeSelector.LabelSelector != nil {
				unsupported = append(unsupported, "nodeSelector (host policy)")
				continue
			}
			if r.EndpointSelector.LabelSelector == nil {
				continue
			}
			parsed := k8sCiliumUtils.ParseToCiliumRule(quiet, "", p.Namespace, p.Name, types.UID(""), r)
			cr := ciliumRule{policy: p.Key(), namespace: p.Namespace, spec: si, rule: parsed,
				subject: policytypes.NewLabelSelector(parsed.EndpointSelector)}
			for i, in := range parsed.Ingress {
				en, err := compileEntry(i, in.IngressCommonRule.FromEndpoints, in.FromEntities, in.FromCIDR, in.FromCIDRSet, nil, in.ToPorts, len(in.ICMPs) > 0, &unsupported)
				if err != nil {
					return nil, fmt.Errorf("%s %s: ingress %d: %w", p.Kind, p.Key(), i+1, err)
				}
				noteUnsupported(&unsupported, "fromGroups", len(in.FromGroups), "fromRequires", len(in.FromRequires))
				cr.ingress = append(cr.ingress, en)
			}
			for i, in := range parsed.IngressDeny {
				en, err := compileEntry(i, in.FromEndpoints, in.FromEntities, in.FromCIDR, in.FromCIDRSet, nil, denyPorts(in.ToPorts), len(in.ICMPs) > 0, &unsupported)
				if err != nil {
					return nil, fmt.Errorf("%s %s: ingressDeny %d: %w", p.Kind, p.Key(), i+1, err)
				}
				noteUnsupported(&unsupported, "fromGroups", len(in.FromGroups), "fromRequires", len(in.FromRequires))
				cr.inDeny = append(cr.inDeny, en)
			}
			for i, eg := range parsed.Egress {
				en, err := compileEntry(i, eg.ToEndpoints, eg.ToEntities, eg.ToCIDR, eg.ToCIDRSet, eg.ToFQDNs, eg.ToPorts, len(eg.ICMPs) > 0, &unsupported)
				if err != nil {
					return nil, fmt.Errorf("%s %s: egress %d: %w", p.Kind, p.Key(), i+1, err)
				}
				noteUnsupported(&unsupported, "toGroups", len(eg.ToGroups), "toServices", len(eg.ToServices), "toRequires", len(eg.ToRequires))
				cr.egress = append(cr.egress, en)
			}
			for i, eg := range parsed.EgressDeny {
				en, err := compileEntry(i, eg.ToEndpoints, eg.ToEntities, eg.ToCIDR, eg.ToCIDRSet, nil, denyPorts(eg.ToPorts), len(eg.ICMPs) > 0, &unsupported)
				if err != nil {
					return nil, fmt.Errorf("%s %s: egressDeny %d: %w", p.Kind, p.Key(), i+1, err)
				}
				noteUnsupported(&unsupported, "toGroups", len(eg.ToGroups), "toServices", len(eg.ToServices), "toRequires", len(eg.ToRequires))
				cr.egDeny = append(cr.egDeny, en)
			}
			dd := parsed.EnableDefaultDeny
			cr.ddIngress = len(parsed.Ingress)+len(parsed.IngressDeny) > 0 && (dd.Ingress == nil || *dd.Ingress)
			cr.ddEgress = len(parsed.Egress)+len(parsed.EgressDeny) > 0 && (dd.Egress == nil || *dd.Egress)
			e.rules = append(e.rules, cr)
		}
		if len(unsupported) > 0 {
			e.Unsupported = append(e.Unsupported, fmt.Sprintf("%s %s: %s", p.Kind, p.Key(), strings.Join(dedupe(unsupported), ", ")))
		}
	}
	return e, nil
}

// nodesToNone replaces the fromNodes/toNodes peers of r, which need node
// labels that flows do not carry (and which Cilium's sanitiser refuses
// unless the agent enables node selector labels), by the entity "none":
// the rule then selects nobody, as documented. It says whether any was
// replaced.
func nodesToNone(r *api.Rule) bool {
	none := api.EntitySlice{api.EntityNone}
	found := false
	swap := func(nodes *[]api.EndpointSelector, entities *api.EntitySlice) {
		if *nodes == nil {
			return
		}
		found = true
		*nodes = nil
		if *entities == nil {
			*entities = none
		}
	}
	for i := range r.Ingress {
		swap(&r.Ingress[i].FromNodes, &r.Ingress[i].FromEntities)
	}
	for i := range r.IngressDeny {
		swap(&r.IngressDeny[i].FromNodes, &r.IngressDeny[i].FromEntities)
	}
	for i := range r.Egress {
		swap(&r.Egress[i].ToNodes, &r.Egress[i].ToEntities)
	}
	for i := range r.EgressDeny {
		swap(&r.EgressDeny[i].ToNodes, &r.EgressDeny[i].ToEntities)
	}
	return found
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// noteUnsupported records the fields (name, count pairs) that are set.
func noteUnsupported(into *[]string, pairs ...any) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if n, _ := pairs[i+1].(int); n > 0 {
			*into = append(*into, pairs[i].(string)+" (selects nobody here)")
		}
	}
}

func emptyList(set bool, n int) bool { return set && n == 0 }

func denyPorts(prs api.PortDenyRules) api.PortRules {
	out := make(api.PortRules, 0, len(prs))
	for _, pr := range prs {
		out = append(out, api.PortRule{Ports: pr.Ports})
	}
	return out
}

func compileEntry(index int, endpoints []api.EndpointSelector, entities api.EntitySlice, cidrs api.CIDRSlice, cidrSets api.CIDRRuleSlice,
	fqdns api.FQDNSelectorSlice, ports api.PortRules, icmps bool, unsupported *[]string) (ciliumEntry, error) {
	en := ciliumEntry{index: index}
	// A peer field given as an empty list selects nobody (Cilium's
	// mergeEndpointSelectors).
	en.none = emptyList(endpoints != nil, len(endpoints)) || emptyList(entities != nil, len(entities)) ||
		emptyList(cidrs != nil, len(cidrs)) || emptyList(cidrSets != nil, len(cidrSets))
	var peers []string
	for _, es := range endpoints {
		en.endpoints = append(en.endpoints, policytypes.NewLabelSelector(es))
		peers = append(peers, "endpoints "+ciliumSelectorText(es))
	}
	for _, ent := range entities {
		switch ent {
		case api.EntityAll, api.EntityWorld, api.EntityWorldIPv4, api.EntityWorldIPv6, api.EntityCluster, api.EntityClusterMesh:
			en.entities = append(en.entities, ent)
		default: // a reserved identity: Cilium's own selectors for it
			for _, sel := range api.EntitySelectorMapping[ent] {
				en.entitySelectors = append(en.entitySelectors, policytypes.NewLabelSelector(sel))
			}
		}
		peers = append(peers, "entity "+string(ent))
	}
	for _, c := range cidrs {
		pfx, err := parseCIDR(string(c))
		if err != nil {
			return en, err
		}
		en.cidrs = append(en.cidrs, cidrExcept{cidr: pfx})
		peers = append(peers, string(c))
	}
	for _, c := range cidrSets {
		if c.Cidr == "" {
			*unsupported = append(*unsupported, "CIDR groups (select nobody here)")
			continue
		}
		ce := cidrExcept{}
		var err error
		if ce.cidr, err = parseCIDR(string(c.Cidr)); err != nil {
			return en, err
		}
		text := string(c.Cidr)
		for _, ex := range c.ExceptCIDRs {
			pfx, err := parseCIDR(string(ex))
			if err != nil {
				return en, err
			}
			ce.except = append(ce.except, pfx)
		}
		if len(c.ExceptCIDRs) > 0 {
			text += " except " + fmt.Sprint(c.ExceptCIDRs)
		}
		en.cidrs = append(en.cidrs, ce)
		peers = append(peers, text)
	}
	for _, f := range fqdns {
		re, err := f.ToRegex()
		if err != nil {
			return en, fmt.Errorf("toFQDNs: %w", err)
		}
		en.fqdns = append(en.fqdns, re)
		peers = append(peers, "fqdn "+f.MatchName+f.MatchPattern)
	}
	en.anyPeer = len(endpoints)+len(entities)+len(cidrs)+len(cidrSets)+len(fqdns) == 0
	for _, pr := range ports {
		for _, pp := range pr.Ports {
			if _, err := strconv.ParseUint(pp.Port, 10, 16); pp.Port != "" && err != nil {
				*unsupported = append(*unsupported, "named port "+pp.Port+" (matches nothing here)")
			}
			en.ports = append(en.ports, pp)
		}
	}
	en.l4 = len(ports) > 0 || icmps
	// A rule of ports without ports listed (toPorts: [{rules: ...}]) is every port.
	if len(ports) > 0 && len(en.ports) == 0 {
		en.ports = []api.PortProtocol{{Port: "0", Protocol: api.ProtoAny}}
	}
	who := "anyone"
	if len(peers) > 0 {
		who = strings.Join(peers, " | ")
	}
	en.text = who + " on " + describeCiliumPorts(en.ports, en.l4)
	return en, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("CIDR %q: %w", s, err)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("CIDR %q: %w", s, err)
	}
	return p.Masked(), nil
}

func describeCiliumPorts(ports []api.PortProtocol, l4 bool) string {
	if !l4 {
		return "any port"
	}
	if len(ports) == 0 {
		return "ICMP only"
	}
	var s []string
	for _, p := range ports {
		proto := string(p.Protocol)
		if p.Protocol.IsAny() {
			proto = "ANY"
		}
		port := p.Port
		if port == "" || port == "0" {
			port = "any"
		} else if p.EndPort > 0 {
			port += "-" + strconv.Itoa(int(p.EndPort))
		}
		s = append(s, proto+"/"+port)
	}
	return strings.Join(s, ",")
}

// matches says whether the entry selects peer on proto/port.
func (en *ciliumEntry) matches(peer CiliumEndpoint, proto string, port uint16) bool {
	if en.allowsNothing() {
		return false
	}
	if !en.portMatches(proto, port) {
		return false
	}
	return en.anyPeer || en.peerMatches(peer)
}

func (en *ciliumEntry) portMatches(proto string, port uint16) bool {
	if !en.l4 {
		return true
	}
	for _, p := range en.ports {
		if !p.Protocol.IsAny() && !strings.EqualFold(string(p.Protocol), proto) {
			continue
		}
		if p.Protocol.IsAny() && proto != "TCP" && proto != "UDP" && proto != "SCTP" {
			continue
		}
		if p.Port == "" || p.Port == "0" {
			return true
		}
		lo, err := strconv.ParseUint(p.Port, 10, 16)
		if err != nil {
			continue // a named port: not judged
		}
		hi := lo
		if p.EndPort > 0 {
			hi = uint64(p.EndPort)
		}
		if uint64(port) >= lo && uint64(port) <= hi {
			return true
		}
	}
	return false
}

func (en *ciliumEntry) peerMatches(peer CiliumEndpoint) bool {
	for _, s := range en.endpoints {
		if s.Matches(peer.Labels) {
			return true
		}
	}
	for _, ent := range en.entities {
		if entityMatches(ent, peer) {
			return true
		}
	}
	for _, sel := range en.entitySelectors {
		if sel.Matches(peer.Labels) {
			return true
		}
	}
	if !peer.world() {
		return false
	}
	if peer.IP.IsValid() {
		for _, c := range en.cidrs {
			if c.contains(peer.IP) {
				return true
			}
		}
	}
	for _, re := range en.fqdns {
		for _, n := range peer.Names {
			if re.MatchString(strings.ToLower(strings.TrimSuffix(n, ".")) + ".") {
				return true
			}
		}
	}
	return false
}

func (c cidrExcept) contains(a netip.Addr) bool {
	if !c.cidr.Contains(a) {
		return false
	}
	for _, ex := range c.except {
		if ex.Contains(a) {
			return false
		}
	}
	return true
}

// entityMatches applies Cilium's entities (policy/api/entity.go) that
// depend on the peer's kind: "cluster" is every pod and every reserved
// identity but world's. The others are selectors of reserved identities
// (ciliumEntry.entitySelectors).
func entityMatches(ent api.Entity, peer CiliumEndpoint) bool {
	switch ent {
	case api.EntityAll:
		return true
	case api.EntityWorld:
		return peer.world()
	case api.EntityWorldIPv4:
		return peer.world() && peer.IP.Is4()
	case api.EntityWorldIPv6:
		return peer.world() && peer.IP.Is6()
	case api.EntityCluster, api.EntityClusterMesh:
		return peer.Pod || !peer.world()
	}
	return false
}

// ciliumSide is the verdict of one direction of one endpoint.
type ciliumSide struct {
	// Selected: some rule with a section for this direction selects the
	// endpoint; DefaultDeny: one of them puts it in default deny.
	Selected, DefaultDeny bool
	// Allowed by AllowedBy (a policy key); Denied by DeniedBy (a deny rule).
	Allowed, Denied     bool
	AllowedBy, DeniedBy string
	// Policies are those putting the endpoint in default deny.
	Policies []string
}

// side judges the ingress of self from peer (ingress true) or the egress of
// self to peer.
func (e *CiliumEvaluator) side(self, peer CiliumEndpoint, ingress bool, proto string, port uint16) ciliumSide {
	var s ciliumSide
	if !self.Pod {
		return s
	}
	for i := range e.rules {
		r := &e.rules[i]
		if r.namespace != "" && r.namespace != self.Namespace {
			continue
		}
		allow, deny, dd := r.egress, r.egDeny, r.ddEgress
		if ingress {
			allow, deny, dd = r.ingress, r.inDeny, r.ddIngress
		}
		if len(allow)+len(deny) == 0 || !r.subject.Matches(self.Labels) {
			continue
		}
		s.Selected = true
		if dd {
			s.DefaultDeny = true
			if !containsString(s.Policies, r.policy) {
				s.Policies = append(s.Policies, r.policy)
			}
		}
		for j := range deny {
			if !s.Denied && deny[j].matches(peer, proto, port) {
				s.Denied, s.DeniedBy = true, r.policy
			}
		}
		for j := range allow {
			if !s.Allowed && allow[j].matches(peer, proto, port) {
				s.Allowed, s.AllowedBy = true, r.policy
			}
		}
	}
	return s
}

// Evaluate judges a connection from src to dst on proto/port by the
// CiliumNetworkPolicies alone.
func (e *CiliumEvaluator) Evaluate(src, dst CiliumEndpoint, proto string, port uint16) Decision {
	eg := e.side(src, dst, false, proto, port)
	in := e.side(dst, src, true, proto, port)
	return ciliumDecision(src, dst, proto, port, eg, in, nil)
}

// ciliumDecision explains the verdicts of both sides; np, when the
// NetworkPolicies also judged, says per side whether they isolate it and
// allow (Cilium enforces both kinds together: a side in default deny by
// either allows what a rule of either allows).
func ciliumDecision(src, dst CiliumEndpoint, proto string, port uint16, eg, in ciliumSide, np *[2]npSide) Decision {
	sides := []struct {
		name string
		s    ciliumSide
		np   npSide
		peer string
		self CiliumEndpoint
	}{{"egress", eg, npSide{}, "to " + dst.String(), src}, {"ingress", in, npSide{}, "from " + src.String(), dst}}
	if np != nil {
		sides[0].np, sides[1].np = np[0], np[1]
	}
	for _, sd := range sides {
		s := sd.s
		if s.Denied {
			return Decision{Side: sd.name, Isolated: []string{s.DeniedBy},
				Reason: fmt.Sprintf("%s of %s: a deny rule of %s denies %s port %d/%s", sd.name, sd.self, s.DeniedBy, sd.peer, port, proto)}
		}
		enforced := s.DefaultDeny || sd.np.isolated
		if enforced && !s.Allowed && !sd.np.allowed {
			isolated := append(append([]string(nil), sd.np.policies...), s.Policies...)
			return Decision{Side: sd.name, Isolated: isolated,
				Reason: fmt.Sprintf("%s of %s is in default deny by %s and no rule allows %s port %d/%s", sd.name, sd.self, strings.Join(isolated, ","), sd.peer, port, proto)}
		}
	}
	by := []string{}
	for _, sd := range sides {
		switch {
		case sd.s.Allowed && sd.s.DefaultDeny:
			by = append(by, sd.name+" allowed by "+sd.s.AllowedBy)
		case sd.np.allowed && sd.np.isolated:
			by = append(by, sd.name+" allowed by "+strings.Join(sd.np.policies, ","))
		}
	}
	if len(by) == 0 {
		return Decision{Allowed: true, Reason: "not isolated"}
	}
	return Decision{Allowed: true, Reason: strings.Join(by, "; ")}
}

// npSide is what the NetworkPolicies say of one side.
type npSide struct {
	isolated, allowed bool
	policies          []string
}

// ciliumSelectorText is a selector as the report shows it: {k=v,...}, the
// "any:" source Cilium's sanitiser adds left out.
func ciliumSelectorText(es api.EndpointSelector) string {
	if es.LabelSelector == nil {
		return "{all}"
	}
	var parts []string
	for _, k := range sortedKeys(es.MatchLabels) {
		parts = append(parts, strings.TrimPrefix(k, "any:")+"="+es.MatchLabels[k])
	}
	for _, r := range es.MatchExpressions {
		parts = append(parts, fmt.Sprintf("%s %s %v", strings.TrimPrefix(r.Key, "any:"), r.Operator, r.Values))
	}
	if len(parts) == 0 {
		return "{all}"
	}
	return "{" + strings.Join(parts, ",") + "}"
}
