package enforcer

import (
	"context"
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// The diff over equivalence classes lists exactly what the pairwise diff
// lists, byte for byte, and its summary counts the same: on the samples
// against the policies in force, and on synthetic clusters up to 200
// workloads against no policies, the recommendation and a recommendation
// with some workloads' policies dropped.
func TestSemanticDiffClassesMatchesPairwise(t *testing.T) {
	type tcase struct {
		name          string
		g             *Graph
		before, after []networkingv1.NetworkPolicy
	}
	var cases []tcase
	g, res := generate(t, sampleFlows(t), DefaultConfig())
	current, err := LoadDir("../testdata/netpol/current")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, tcase{"samples/current→recommended", g, current, res.Policies}, tcase{"samples/recommended→current", g, res.Policies, current},
		tcase{"samples/none→recommended", g, nil, res.Policies})
	for _, n := range []int{50, 100, 200} {
		if n == 200 && raceOn {
			continue // the race run checks the smaller sizes; the plain run all
		}
		g := NewGraph()
		syntheticTraffic(n, 10, 40*n, g.Add, nil)
		res, err := Generate(g, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		var some []networkingv1.NetworkPolicy
		for i, np := range res.Policies {
			if i%3 != 0 {
				some = append(some, np)
			}
		}
		// Kept within a few seconds: the pairwise oracle is slow.
		if n != 200 {
			cases = append(cases, tcase{fmt.Sprintf("%d/none→recommended", n), g, nil, res.Policies})
		}
		if n != 100 {
			cases = append(cases, tcase{fmt.Sprintf("%d/some→recommended", n), g, some, res.Policies})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := semanticDiffPairwise(context.Background(), c.before, c.after, c.g)
			if err != nil {
				t.Fatal(err)
			}
			d, err := SemanticDiffClasses(context.Background(), c.before, c.after, c.g)
			if err != nil {
				t.Fatal(err)
			}
			got := d.Changes()
			if a, b := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); a != b {
				t.Fatalf("class diff (%d changes) differs from the pairwise diff (%d changes)", len(got), len(want))
			}
			if len(want) == 0 {
				t.Fatal("no changes: the case tests nothing")
			}
			sum := d.Summarize()
			losses, gains, unobserved := 0, 0, 0
			var observed []string
			for _, ch := range want {
				if ch.Gains {
					gains++
				} else {
					losses++
					if ch.Observed == 0 {
						unobserved++
					}
				}
				if ch.Observed > 0 {
					observed = append(observed, fmt.Sprintf("%+v", ch))
				}
			}
			total := 0
			for _, n := range sum.UnobservedLosses {
				total += n
			}
			if sum.Losses != losses || sum.Gains != gains || total != unobserved || len(sum.Observed) != len(observed) {
				t.Errorf("summary %d losses, %d gains, %d unobserved losses, %d observed; pairwise %d, %d, %d, %d",
					sum.Losses, sum.Gains, total, len(sum.Observed), losses, gains, unobserved, len(observed))
			}
			seen := map[string]bool{}
			for _, o := range sum.Observed {
				seen[fmt.Sprintf("%+v", o)] = true
			}
			for _, o := range observed {
				if !seen[o] {
					t.Errorf("observed change missing from the summary: %s", o)
				}
			}
			pc, qc := d.Classes()
			t.Logf("%d changes; %d peer classes, %d port classes", len(want), pc, qc)
		})
	}
}
