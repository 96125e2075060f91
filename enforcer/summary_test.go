package enforcer

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestSummarizeGroupsTheDiff: against the bookinfo policies in force, the
// summary recommend --current prints and the page shows lists the two
// rules nothing used, gives every observed loss that recommend left out its
// reason (and no other change one), orders the observed changes by flows,
// and counts the other losses per namespace so that they add up.
func TestSummarizeGroupsTheDiff(t *testing.T) {
	flows := sampleFlows(t)
	g, res := generate(t, flows, DefaultConfig())
	inForce, err := LoadDir("../testdata/netpol/current")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(context.Background(), g, inForce, res)
	if err != nil {
		t.Fatal(err)
	}
	var unused []string
	for _, u := range s.Unused {
		unused = append(unused, fmt.Sprintf("%s %s %d", u.Policy, u.Direction, u.Index))
	}
	if got := strings.Join(unused, ", "); got != "bookinfo/bookinfo-open ingress 1, bookinfo/ratings-db egress 0" || s.RulesUnused != len(s.Unused) {
		t.Errorf("unused rules %q (counted %d)", got, s.RulesUnused)
	}
	if s.BlastRadius == nil || s.BlastRadius.Before != s.BlastBefore || s.BlastRadius.After != s.BlastAfter || s.BlastBefore <= s.BlastAfter {
		t.Errorf("blast radius %+v, figures %d → %d", s.BlastRadius, s.BlastBefore, s.BlastAfter)
	}

	skipped := map[string]string{}
	for _, sk := range res.Skipped {
		skipped[sk.Edge.From.String()+" → "+sk.Edge.To.String()+" "+fmt.Sprintf("%s/%d", sk.Edge.Protocol, sk.Edge.Port)] = sk.Reason
	}
	if len(skipped) != 3 {
		t.Fatalf("%d edges left out, want the 3 guardrail edges", len(skipped))
	}
	observedLosses, leftOut := 0, 0
	for i, c := range s.Observed {
		if i > 0 && c.Observed > s.Observed[i-1].Observed {
			t.Errorf("change %d (%d flows) after one of %d flows", i, c.Observed, s.Observed[i-1].Observed)
		}
		if c.Observed == 0 {
			t.Errorf("an unobserved change listed: %+v", c)
		}
		why := skipped[c.From+" → "+c.To+" "+c.Port]
		if c.Gains {
			why = ""
		} else {
			observedLosses++
		}
		if c.LeftOut != why {
			t.Errorf("%s → %s %s (gains %v): left out %q, want %q", c.From, c.To, c.Port, c.Gains, c.LeftOut, why)
		}
		if c.LeftOut != "" {
			leftOut++
		}
	}
	if leftOut != 3 {
		t.Errorf("%d observed losses carry a left-out reason, want 3", leftOut)
	}
	if s.Losses != observedLosses+s.UnobservedLossTotal() || s.Gains == 0 || len(s.UnobservedLossNamespaces()) != len(s.UnobservedLosses) {
		t.Errorf("%d losses = %d observed + %d unobserved? %d gains; namespaces %v", s.Losses, observedLosses, s.UnobservedLossTotal(), s.Gains, s.UnobservedLossNamespaces())
	}
	if s.PeerClasses == 0 || s.PortClasses == 0 {
		t.Errorf("classes %d × %d", s.PeerClasses, s.PortClasses)
	}
}
