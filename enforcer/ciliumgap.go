package enforcer

import (
	"github.com/cilium/cilium/pkg/labels"
)

// The least-privilege gap of CiliumNetworkPolicies: how much observed
// traffic each allow rule (ingress, egress) carried, as Usage does for
// NetworkPolicies. Deny rules allow nothing and are not counted.

// CiliumUsage measures every allow rule of the policies against the
// observed graph. Rules are numbered per policy and direction across its
// specs, in order.
func CiliumUsage(policies []CiliumNetworkPolicy, g *Graph) ([]RuleUsage, error) {
	usage, _, err := ciliumUsage(policies, g)
	return usage, err
}

// ciliumUsage is CiliumUsage, with what of the policies is not judged
// (CiliumEvaluator.Unsupported).
func ciliumUsage(policies []CiliumNetworkPolicy, g *Graph) ([]RuleUsage, []string, error) {
	g.Settle()
	ev, err := NewCiliumEvaluator(policies)
	if err != nil {
		return nil, nil, err
	}
	type observed struct {
		from, to CiliumEndpoint
		e        Edge
		flows    uint64
	}
	var edges []observed
	for e, st := range g.Edges {
		edges = append(edges, observed{g.ciliumEndpoint(e.From), g.ciliumEndpoint(e.To), e, st.Flows})
	}
	var out []RuleUsage
	next := map[string]int{} // policy + direction → next rule index
	for i := range ev.rules {
		r := &ev.rules[i]
		name := r.policy
		if r.namespace == "" {
			name = clusterwideNamespace + "/" + name
		}
		for _, dir := range []string{"egress", "ingress"} {
			entries := r.egress
			if dir == "ingress" {
				entries = r.ingress
			}
			for j := range entries {
				en := &entries[j]
				if en.allowsNothing() {
					continue // `ingress: [{}]`: default deny, no access to use
				}
				word := "to "
				if dir == "ingress" {
					word = "from "
				}
				u := RuleUsage{Policy: name, Direction: dir, Index: next[name+dir], Rule: word + en.text}
				next[name+dir]++
				for _, o := range edges {
					self, peer := o.from, o.to
					if dir == "ingress" {
						self, peer = o.to, o.from
					}
					if !self.Pod || r.namespace != "" && r.namespace != self.Namespace || !r.subject.Matches(self.Labels) {
						continue
					}
					if en.matches(peer, o.e.Protocol, o.e.Port) {
						u.Flows += o.flows
						u.Edges++
					}
				}
				out = append(out, u)
			}
		}
	}
	return out, ev.Unsupported, nil
}

// clusterwideNamespace groups the rules of clusterwide policies in the report.
const clusterwideNamespace = "(clusterwide)"

// ciliumEndpoint is Cilium's view of an edge's end: a workload's stable
// labels and its namespace's (as Cilium mirrors them), an address outside
// the cluster with the DNS name seen for it, or a node.
func (g *Graph) ciliumEndpoint(p Peer) CiliumEndpoint {
	switch p.Kind {
	case PeerWorkload:
		w := g.Workloads[p.Workload]
		var ls labels.LabelArray
		for k, v := range w.Labels {
			ls = append(ls, labels.NewLabel(k, v, labels.LabelSourceK8s))
		}
		for k, v := range g.NamespaceLabels[w.Namespace] {
			ls = append(ls, labels.NewLabel(nsLabelMirror+k, v, labels.LabelSourceK8s))
		}
		ls = append(ls, labels.NewLabel(podNamespaceKey, w.Namespace, labels.LabelSourceK8s))
		return CiliumEndpoint{Labels: ls.Sort(), Pod: true, Namespace: w.Namespace}
	case PeerNode:
		// Remote node or API server: the graph does not tell which.
		return CiliumEndpoint{Labels: labels.LabelArray{labels.NewLabel(labels.IDNameRemoteNode, "", labels.LabelSourceReserved)}, IP: p.Addr}
	}
	e := CiliumEndpoint{Labels: labels.LabelArray{labels.NewLabel(labels.IDNameWorld, "", labels.LabelSourceReserved)}, IP: p.Addr}
	if p.Name != "" {
		e.Names = []string{p.Name}
	}
	return e
}

// allowsNothing says the rule selects no peer or no port: it only puts its
// direction in default deny.
func (en *ciliumEntry) allowsNothing() bool { return en.none || en.anyPeer && !en.l4 }
