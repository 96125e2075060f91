package enforcer

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// Violation is an observed edge that a generated policy set would deny.
type Violation struct {
	Edge     Edge
	Stats    EdgeStats
	Decision Decision
}

// Prove runs every observed edge that the policies are meant to allow
// through the evaluator. Edges skipped on purpose (guardrails, too little
// evidence) must be denied; all others allowed. Any disagreement is a bug
// in generation, returned rather than written.
func Prove(g *Graph, res *Result) ([]Violation, error) {
	g.Settle()
	ev, err := NewEvaluator(res.Policies, func(ns string) map[string]string { return g.NamespaceLabels[ns] })
	if err != nil {
		return nil, err
	}
	skipped := map[Edge]string{}
	for _, s := range res.Skipped {
		skipped[s.Edge] = s.Reason
	}
	var out []Violation
	for e, st := range g.Edges {
		c := Connection{Src: g.endpoint(e.From), Dst: g.endpoint(e.To), Port: int32(e.Port), Protocol: corev1.Protocol(e.Protocol)}
		d := ev.Evaluate(c)
		reason, skip := skipped[e]
		switch {
		case skip && strings.HasPrefix(reason, "fewer than"):
			// Too little evidence: either outcome is acceptable.
		case skip && d.Allowed, !skip && !d.Allowed:
			out = append(out, Violation{Edge: e, Stats: *st, Decision: d})
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i].Edge) < fmt.Sprint(out[j].Edge) })
	return out, nil
}

func (g *Graph) endpoint(p Peer) Endpoint {
	if p.Kind == PeerWorkload {
		w := g.Workloads[p.Workload]
		return Endpoint{Pod: &Pod{Namespace: w.Namespace, Name: w.Name, Labels: w.Labels}}
	}
	return Endpoint{IP: p.Addr}
}

// FlowEndpoint is the evaluator's view of a flow endpoint: a pod with its
// labels, or an address. ok is false for the local node, whose traffic
// NetworkPolicy always allows.
func FlowEndpoint(e *schema.Endpoint, ip netip.Addr) (Endpoint, bool) {
	if w, ok := WorkloadOf(e); ok {
		labels := map[string]string{}
		for k, v := range e.Labels {
			if !strings.Contains(k, ":") && !strings.HasPrefix(k, "io.cilium.") && k != "io.kubernetes.pod.namespace" {
				labels[k] = v
			}
		}
		return Endpoint{Pod: &Pod{Namespace: w.Namespace, Name: e.Pod, Labels: labels, IP: ip}}, true
	}
	if e.WorkloadKind == schema.KindReserved && (e.Workload == schema.ReservedHost || e.Workload == "health") {
		return Endpoint{}, false
	}
	return Endpoint{IP: ip}, true
}

// Verifier judges observed flows against a policy set.
type Verifier struct {
	ev       *Evaluator
	nsLabels map[string]map[string]string
	// Unjudged counts flows not judged because a pod end's labels are
	// unknown: a podSelector cannot be matched against them.
	Unjudged int
	// DirectionUnknown counts flows not judged because no signal said
	// which end opened the connection (see Learn).
	DirectionUnknown int
	listening        *Listening
	// cilium, when set, judges by CiliumNetworkPolicies too (SetCilium).
	cilium *CiliumEvaluator
}

// NewVerifier prepares a verifier; namespace labels are learned from the
// flows as they come (Cilium mirrors them onto endpoints).
func NewVerifier(policies []networkingv1.NetworkPolicy) (*Verifier, error) {
	v := &Verifier{nsLabels: map[string]map[string]string{}, listening: NewListening()}
	ev, err := NewEvaluator(policies, func(ns string) map[string]string { return v.nsLabels[ns] })
	if err != nil {
		return nil, err
	}
	v.ev = ev
	return v, nil
}

// Learn records which ports each end listens on, from a flow whose opener
// is known: a first pass over the flows lets Check judge those whose
// opener only the listening ports tell (Listening.Opener).
func (v *Verifier) Learn(f *schema.Flow) { v.listening.Learn(f) }

// Check judges one flow; ok is false when the flow is not subject to
// NetworkPolicy (a reply, or local-node traffic) or when who opened it is
// unknown.
func (v *Verifier) Check(f *schema.Flow) (d Decision, ok bool) {
	opener := v.listening.Opener(f)
	if opener == OpenedByDestination {
		return Decision{}, false
	}
	for _, e := range []*schema.Endpoint{&f.Src, &f.Dst} {
		if e.Namespace != "" && v.nsLabels[e.Namespace] == nil {
			if nl := NamespaceLabels(e.Labels); len(nl) > 0 {
				v.nsLabels[e.Namespace] = nl
			}
		}
	}
	src, ok1 := FlowEndpoint(&f.Src, f.SrcIP)
	dst, ok2 := FlowEndpoint(&f.Dst, f.DstIP)
	if !ok1 || !ok2 || (src.Pod == nil && dst.Pod == nil) {
		return Decision{}, false
	}
	if src.Pod != nil && !podLabelsKnown(f.Src.Labels) || dst.Pod != nil && !podLabelsKnown(f.Dst.Labels) {
		v.Unjudged++
		return Decision{}, false
	}
	switch f.Protocol {
	case "TCP", "UDP", "SCTP":
	default:
		return Decision{}, false
	}
	if opener == OpenedUnknown {
		v.DirectionUnknown++
		return Decision{}, false
	}
	conn := Connection{Src: src, Dst: dst, Port: int32(f.DstPort), Protocol: corev1.Protocol(f.Protocol)}
	if v.cilium != nil {
		return v.checkCilium(f, conn), true
	}
	return v.ev.Evaluate(conn), true
}
