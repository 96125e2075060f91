package enforcer

import (
	"context"
	"fmt"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Summary is what a security team reports about a policy change, first:
// segmentation in force and proposed, unused access, the blast radius, and
// the observed traffic the change would deny with the reason.
type Summary struct {
	Namespaces int `json:"namespaces"`
	// DefaultDenyBefore/After count the namespaces whose every pod is
	// isolated for both ingress and egress (a policy with an empty
	// podSelector and both policy types).
	DefaultDenyBefore int `json:"default_deny_namespaces_before"`
	DefaultDenyAfter  int `json:"default_deny_namespaces_after"`
	Workloads         int `json:"workloads"`
	// CoveredBefore/After count the workloads some policy selects.
	CoveredBefore int `json:"workloads_covered_before"`
	CoveredAfter  int `json:"workloads_covered_after"`
	// RulesUnused of RulesInForce carried no observed traffic.
	RulesInForce int `json:"rules_in_force"`
	RulesUnused  int `json:"rules_unused"`
	// Blast radius sums (BlastRadius) and the reduction in %.
	BlastBefore    int     `json:"blast_radius_before"`
	BlastAfter     int     `json:"blast_radius_after"`
	BlastReduction float64 `json:"blast_radius_reduction_percent"`
	// WouldDeny are the observed flows the recommendation would deny, with
	// why (a guardrail of the generator), most flows first.
	WouldDeny []DeniedEdge `json:"observed_would_deny"`
	// AccessChanges is the semantic diff from the policies in force to the
	// recommended ones, grouped (its counts are figures of the summary).
	AccessChanges
	// DiffError says why the diff figures are missing (it did not finish).
	DiffError string `json:"diff_error,omitempty"`
	// Unused are the rules in force that carried no observed traffic.
	Unused []RuleUsage `json:"-"`
	// BlastRadius compares the policies in force with the recommended ones.
	BlastRadius *BlastRadius `json:"-"`
}

// AccessChanges groups a semantic diff as flowwarden reports it
// (recommend --current, the page, the report): counts of the pairs/ports
// losing and gaining access, the changes to observed traffic one by one,
// and the losses nobody was seen using as counts per namespace.
type AccessChanges struct {
	// Losses and Gains count the pairs/ports losing and gaining access;
	// UnobservedLosses counts, per namespace, the losses of access nobody
	// was seen using (DiffSummary).
	Losses           int            `json:"losses"`
	Gains            int            `json:"gains"`
	UnobservedLosses map[string]int `json:"unobserved_losses_by_namespace"`
	// Observed are the changes to observed traffic, most flows first.
	Observed []ObservedChange `json:"-"`
	// PeerClasses and PortClasses are the equivalence classes the diff
	// was judged over.
	PeerClasses, PortClasses int `json:"-"`
}

// ObservedChange is a change of access to observed traffic; a loss
// recommend left out on purpose says why.
type ObservedChange struct {
	Change
	LeftOut string
}

// GroupChanges groups the diff d from the policies in force to the
// recommendation rec.
func GroupChanges(d *ClassDiff, rec *Result) AccessChanges {
	sum := d.Summarize()
	out := AccessChanges{Losses: sum.Losses, Gains: sum.Gains, UnobservedLosses: sum.UnobservedLosses}
	out.PeerClasses, out.PortClasses = d.Classes()
	leftOut := map[string]string{}
	for _, s := range rec.Skipped {
		leftOut[fmt.Sprintf("%s %s %s/%d", s.Edge.From, s.Edge.To, s.Edge.Protocol, s.Edge.Port)] = s.Reason
	}
	for _, c := range sum.Observed {
		o := ObservedChange{Change: c}
		if !c.Gains {
			o.LeftOut = leftOut[c.From+" "+c.To+" "+c.Port]
		}
		out.Observed = append(out.Observed, o)
	}
	return out
}

// DeniedEdge is an observed edge a policy set would deny, and why.
type DeniedEdge struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Port  string `json:"port"`
	Flows uint64 `json:"flows"`
	Why   string `json:"why"`
	// Findings are those the edge was held back for (Skipped.Flags).
	Findings []Flag `json:"findings,omitempty"`
}

// UnobservedLossNamespaces returns the namespaces of UnobservedLosses in
// order, for rendering.
func (s *AccessChanges) UnobservedLossNamespaces() []string { return sortedKeys(s.UnobservedLosses) }

// UnobservedLossTotal sums UnobservedLosses.
func (s *AccessChanges) UnobservedLossTotal() int {
	n := 0
	for _, v := range s.UnobservedLosses {
		n += v
	}
	return n
}

// Summarize computes the summary of replacing inForce with the
// recommendation rec for the observed graph. The diff part is bounded by
// ctx: when ctx ends first, DiffError says so and the rest is filled.
func Summarize(ctx context.Context, g *Graph, inForce []networkingv1.NetworkPolicy, rec *Result) (*Summary, error) {
	g.Settle()
	s := &Summary{Workloads: len(g.Workloads)}
	nss := map[string]bool{}
	for _, w := range g.Workloads {
		nss[w.Namespace] = true
	}
	s.Namespaces = len(nss)
	s.DefaultDenyBefore, s.CoveredBefore = coverage(inForce, g, nss)
	s.DefaultDenyAfter, s.CoveredAfter = coverage(rec.Policies, g, nss)
	usage, err := Usage(inForce, g)
	if err != nil {
		return nil, err
	}
	s.RulesInForce = len(usage)
	for _, u := range usage {
		if u.Flows == 0 {
			s.RulesUnused++
			s.Unused = append(s.Unused, u)
		}
	}
	br := rec.BlastRadius
	if br == nil {
		if br, err = ComputeBlastRadius(inForce, rec.Policies, g); err != nil {
			return nil, err
		}
	}
	s.BlastRadius = br
	s.BlastBefore, s.BlastAfter, s.BlastReduction = br.Before, br.After, br.ReductionPercent()
	// Observed edges the recommendation denies: the generator's own
	// reasons (every other observed edge is proven allowed).
	for _, sk := range rec.Skipped {
		if strings.HasPrefix(sk.Reason, "fewer than") {
			continue
		}
		s.WouldDeny = append(s.WouldDeny, DeniedEdge{From: peerLabel(sk.Edge.From), To: peerLabel(sk.Edge.To),
			Port: fmt.Sprintf("%s/%d", sk.Edge.Protocol, sk.Edge.Port), Flows: sk.Stats.Flows, Why: sk.Reason, Findings: sk.Flags})
	}
	sort.SliceStable(s.WouldDeny, func(i, j int) bool { return s.WouldDeny[i].Flows > s.WouldDeny[j].Flows })
	d, err := SemanticDiffClasses(ctx, inForce, rec.Policies, g)
	if err != nil {
		if ctx.Err() == nil {
			return nil, err
		}
		s.DiffError = fmt.Sprintf("the semantic diff of %d workloads did not finish in time (%v)", len(g.Workloads), ctx.Err())
		return s, nil
	}
	s.AccessChanges = GroupChanges(d, rec)
	return s, nil
}

// coverage counts the namespaces (of nss) with a default deny of both
// directions and the observed workloads some policy selects.
func coverage(policies []networkingv1.NetworkPolicy, g *Graph, nss map[string]bool) (defaultDeny, covered int) {
	in, eg := map[string]bool{}, map[string]bool{}
	for _, np := range policies {
		sel := np.Spec.PodSelector
		if len(sel.MatchLabels)+len(sel.MatchExpressions) > 0 || !nss[np.Namespace] {
			continue
		}
		for _, t := range policyTypes(&np) {
			if t == networkingv1.PolicyTypeIngress && len(np.Spec.Ingress) == 0 {
				in[np.Namespace] = true
			}
			if t == networkingv1.PolicyTypeEgress {
				// DNS may stay allowed: only rules to pods or anywhere count.
				eg[np.Namespace] = true
				for _, r := range np.Spec.Egress {
					if len(r.To) == 0 {
						eg[np.Namespace] = false
					}
				}
			}
		}
	}
	for ns := range nss {
		if in[ns] && eg[ns] {
			defaultDeny++
		}
	}
	ev, err := NewEvaluator(policies, nil)
	if err != nil {
		return defaultDeny, 0
	}
	for _, w := range g.Workloads {
		for _, i := range ev.byNS[w.Namespace] {
			if ev.policies[i].selector.Matches(labels.Set(w.Labels)) {
				covered++
				break
			}
		}
	}
	return defaultDeny, covered
}
