package enforcer

import (
	"github.com/cilium/cilium/pkg/policy/api"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flowwarden/flowwarden/schema"
)

// CiliumNetworkPolicies in verify: a flow is judged by the
// NetworkPolicies and the CiliumNetworkPolicies together, as Cilium
// enforces both (ciliumDecision).

// SetCilium has Check judge flows by the CiliumNetworkPolicies of c too.
func (v *Verifier) SetCilium(c *CiliumEvaluator) { v.cilium = c }

// checkCilium judges a flow Check accepted, by both kinds of policy.
func (v *Verifier) checkCilium(f *schema.Flow, conn Connection) Decision {
	src := CiliumEndpointOf(&f.Src, f.SrcIP, nil)
	dst := CiliumEndpointOf(&f.Dst, f.DstIP, f.DstNames)
	eg := v.cilium.side(src, dst, false, f.Protocol, f.DstPort)
	in := v.cilium.side(dst, src, true, f.Protocol, f.DstPort)
	var np [2]npSide
	if conn.Src.Pod != nil {
		np[0] = v.ev.npSide(conn, conn.Src.Pod, true)
	}
	if conn.Dst.Pod != nil {
		np[1] = v.ev.npSide(conn, conn.Dst.Pod, false)
	}
	return ciliumDecision(src, dst, f.Protocol, f.DstPort, eg, in, &np)
}

// npSide says whether NetworkPolicies isolate pod for the egress of the
// source (egress) or the ingress of the destination, and whether one of
// their rules allows c.
func (e *Evaluator) npSide(c Connection, pod *Pod, egress bool) npSide {
	var s npSide
	podLabels := labels.Set(pod.Labels)
	peer := c.Src
	if egress {
		peer = c.Dst
	}
	for _, i := range e.byNS[pod.Namespace] {
		p := &e.policies[i]
		if egress && !p.egress || !egress && !p.ingress || !p.selector.Matches(podLabels) {
			continue
		}
		s.isolated = true
		s.policies = append(s.policies, p.np.Namespace+"/"+p.np.Name)
		rules := p.inRules
		if egress {
			rules = p.egRules
		}
		for _, r := range rules {
			if e.ruleAllows(r, p.np.Namespace, peer, c) {
				s.allowed = true
			}
		}
	}
	return s
}

// SetCilium has the verification judge by the CiliumNetworkPolicies (and
// CiliumClusterwideNetworkPolicies) cps as well. It returns what of them is
// not judged (CiliumEvaluator.Unsupported).
func (v *Verification) SetCilium(cps []CiliumNetworkPolicy) ([]string, error) {
	c, err := NewCiliumEvaluator(cps)
	if err != nil {
		return nil, err
	}
	v.verifier.SetCilium(c)
	v.verdict.Policies += len(cps)
	for _, cp := range cps {
		v.report.specific[cp.Key()] = ciliumSpecific(&cp)
	}
	return c.Unsupported, nil
}

// ciliumSpecific says a policy selects particular pods (not a whole
// namespace), for the blame of CI annotations.
func ciliumSpecific(cp *CiliumNetworkPolicy) bool {
	for _, r := range append([]*api.Rule{cp.Spec}, cp.Specs...) {
		if r != nil && r.EndpointSelector.LabelSelector != nil && len(r.EndpointSelector.MatchLabels)+len(r.EndpointSelector.MatchExpressions) > 0 {
			return true
		}
	}
	return false
}
