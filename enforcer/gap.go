package enforcer

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// RuleUsage says how much observed traffic one rule of an existing policy
// carried. A rule that carried none is the least-privilege gap: access that
// is granted and that nobody used in the window.
type RuleUsage struct {
	Policy    string `json:"policy"`    // namespace/name
	Direction string `json:"direction"` // ingress or egress
	Index     int    `json:"index"`     // rule index within the direction
	Rule      string `json:"rule"`      // human description
	Flows     uint64 `json:"flows"`
	Edges     int    `json:"edges"`
}

// Usage measures every rule of the policies against the observed graph.
func Usage(policies []networkingv1.NetworkPolicy, g *Graph) ([]RuleUsage, error) {
	g.Settle()
	ev, err := NewEvaluator(policies, func(ns string) map[string]string { return g.NamespaceLabels[ns] })
	if err != nil {
		return nil, err
	}
	// The observed edges by the namespace of the pod a rule would be about:
	// the destination's for ingress rules, the source's for egress.
	type observed struct {
		c     Connection
		flows uint64
	}
	about := map[string]map[string][]observed{"ingress": {}, "egress": {}}
	for e, st := range g.Edges {
		o := observed{Connection{Src: g.endpoint(e.From), Dst: g.endpoint(e.To), Port: int32(e.Port), Protocol: corev1.Protocol(e.Protocol)}, st.Flows}
		if o.c.Dst.Pod != nil {
			about["ingress"][o.c.Dst.Pod.Namespace] = append(about["ingress"][o.c.Dst.Pod.Namespace], o)
		}
		if o.c.Src.Pod != nil {
			about["egress"][o.c.Src.Pod.Namespace] = append(about["egress"][o.c.Src.Pod.Namespace], o)
		}
	}
	var out []RuleUsage
	for pi := range ev.policies {
		p := &ev.policies[pi]
		name := p.np.Namespace + "/" + p.np.Name
		for dir, rules := range map[string][]compiledRule{"ingress": p.inRules, "egress": p.egRules} {
			if len(rules) == 0 {
				continue
			}
			// The edges of the pods the policy selects.
			var selected []observed
			for _, o := range about[dir][p.np.Namespace] {
				self := o.c.Dst
				if dir == "egress" {
					self = o.c.Src
				}
				if p.selector.Matches(labels.Set(self.Pod.Labels)) {
					selected = append(selected, o)
				}
			}
			specs := describeRules(p.np, dir)
			for ri, r := range rules {
				u := RuleUsage{Policy: name, Direction: dir, Index: ri, Rule: specs[ri]}
				for _, o := range selected {
					peer := o.c.Src
					if dir == "egress" {
						peer = o.c.Dst
					}
					if ev.ruleAllows(r, p.np.Namespace, peer, o.c) {
						u.Flows += o.flows
						u.Edges++
					}
				}
				out = append(out, u)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Policy != b.Policy {
			return a.Policy < b.Policy
		}
		if a.Direction != b.Direction {
			return a.Direction < b.Direction
		}
		return a.Index < b.Index
	})
	return out, nil
}

func describeRules(np *networkingv1.NetworkPolicy, dir string) []string {
	var out []string
	describePorts := func(ports []networkingv1.NetworkPolicyPort) string {
		if len(ports) == 0 {
			return "any port"
		}
		var s []string
		for _, p := range ports {
			proto := "TCP"
			if p.Protocol != nil {
				proto = string(*p.Protocol)
			}
			switch {
			case p.Port == nil:
				s = append(s, proto+"/any")
			case p.EndPort != nil:
				s = append(s, fmt.Sprintf("%s/%s-%d", proto, p.Port.String(), *p.EndPort))
			default:
				s = append(s, proto+"/"+p.Port.String())
			}
		}
		return strings.Join(s, ",")
	}
	describePeers := func(peers []networkingv1.NetworkPolicyPeer) string {
		if len(peers) == 0 {
			return "anyone"
		}
		var s []string
		for _, p := range peers {
			var parts []string
			if p.IPBlock != nil {
				b := p.IPBlock.CIDR
				if len(p.IPBlock.Except) > 0 {
					b += " except " + strings.Join(p.IPBlock.Except, ",")
				}
				parts = append(parts, b)
			}
			if p.NamespaceSelector != nil {
				parts = append(parts, "namespaces "+selectorString(p.NamespaceSelector.MatchLabels))
			}
			if p.PodSelector != nil {
				parts = append(parts, "pods "+selectorString(p.PodSelector.MatchLabels))
			}
			s = append(s, strings.Join(parts, " & "))
		}
		return strings.Join(s, " | ")
	}
	if dir == "ingress" {
		for _, r := range np.Spec.Ingress {
			out = append(out, "from "+describePeers(r.From)+" on "+describePorts(r.Ports))
		}
	} else {
		for _, r := range np.Spec.Egress {
			out = append(out, "to "+describePeers(r.To)+" on "+describePorts(r.Ports))
		}
	}
	return out
}

func selectorString(m map[string]string) string {
	if len(m) == 0 {
		return "{all}"
	}
	var s []string
	for _, k := range sortedKeys(m) {
		s = append(s, k+"="+m[k])
	}
	return "{" + strings.Join(s, ",") + "}"
}

// Change is one difference in access between two policy sets.
type Change struct {
	From, To string
	Port     string
	Gains    bool // true: newly allowed; false: newly denied
	Observed uint64
}

// SemanticDiff compares what two policy sets allow between the observed
// workloads (and observed external peers), on every port either set or the
// traffic mentions for that pair. It answers "which pod pairs and ports gain
// or lose access", not how the YAML changed. It is computed over
// equivalence classes (SemanticDiffClasses) and expanded to one Change per
// pair and port: on a large cluster that list is long, and
// SemanticDiffClasses(...).Summarize() counts it instead. It stops with
// ctx's error when ctx ends.
func SemanticDiff(ctx context.Context, before, after []networkingv1.NetworkPolicy, g *Graph) ([]Change, error) {
	d, err := SemanticDiffClasses(ctx, before, after, g)
	if err != nil {
		return nil, err
	}
	return d.Changes(), nil
}

// semanticDiffPairwise is the diff judged pair by pair on every port: the
// oracle SemanticDiff is tested against. Its cost grows with the square of
// the workloads.
func semanticDiffPairwise(ctx context.Context, before, after []networkingv1.NetworkPolicy, g *Graph) ([]Change, error) {
	g.Settle()
	nsl := func(ns string) map[string]string { return g.NamespaceLabels[ns] }
	evA, err := NewEvaluator(before, nsl)
	if err != nil {
		return nil, err
	}
	evB, err := NewEvaluator(after, nsl)
	if err != nil {
		return nil, err
	}
	// The peers, ports and observed flows are enumerated as the class diff
	// enumerates them: the oracle differs in how access is judged, pair by
	// pair, not in what it is judged over.
	peers, portList, observed, err := diffPeers(before, after, g)
	if err != nil {
		return nil, err
	}
	endpoints := make([]Endpoint, len(peers))
	names := make([]string, len(peers))
	keys := make([]Peer, len(peers))
	for i, p := range peers {
		endpoints[i], names[i], keys[i] = g.endpoint(p), p.String(), diffKey(p)
	}
	// Each source peer's row is independent: rows are judged on every CPU
	// (the evaluators are read-only) and joined in peer order.
	rows := make([][]Change, len(peers))
	row := func(i int) {
		from := peers[i]
		for j, to := range peers {
			if from.Kind != PeerWorkload && to.Kind != PeerWorkload || i == j {
				continue
			}
			for _, pt := range portList {
				c := Connection{Src: endpoints[i], Dst: endpoints[j], Port: pt.n, Protocol: pt.proto}
				a, b := evA.Allows(c), evB.Allows(c)
				if a == b {
					continue
				}
				rows[i] = append(rows[i], Change{From: names[i], To: names[j], Port: pt.key, Gains: b, Observed: observed[pairPort{keys[i], keys[j], pt.key}]})
			}
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(peers)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(peers) {
					return
				}
				row(i)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("semantic diff of %d peers stopped: %w", len(peers), err)
	}
	var out []Change
	for _, r := range rows {
		out = append(out, r...)
	}
	return out, nil
}

func addPorts(ports map[string]bool, ps []networkingv1.NetworkPolicyPort) {
	for _, p := range ps {
		if p.Port == nil || p.Port.Type != 0 {
			continue
		}
		proto := "TCP"
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		ports[fmt.Sprintf("%s/%d", proto, p.Port.IntVal)] = true
	}
}
