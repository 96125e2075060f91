package enforcer

import (
	"strings"
	"testing"
)

// TestCiliumUsage: the allow rules of the CiliumNetworkPolicies recommend
// writes for the published samples that carried no observed traffic are
// exactly those of the NetworkPolicy flavour (the DNS egress of the
// workloads that looked nothing up), policy by policy; the rules that
// only put a direction in default deny (`ingress: [{}]`) are not counted;
// a rule nobody's traffic matches is unused.
func TestCiliumUsage(t *testing.T) {
	flows := sampleFlows(t)
	g, res := generate(t, flows, DefaultConfig())
	cps := ToCilium(res, g)
	nu, err := Usage(res.Policies, g)
	if err != nil {
		t.Fatal(err)
	}
	cu, err := CiliumUsage(writtenCilium(t, cps), g)
	if err != nil {
		t.Fatal(err)
	}
	unused := func(us []RuleUsage) map[string]int {
		out := map[string]int{}
		for _, u := range us {
			if u.Flows == 0 {
				out[u.Policy+" "+u.Direction]++
			}
		}
		return out
	}
	want, got := unused(nu), unused(cu)
	if len(want) == 0 || len(got) != len(want) {
		t.Errorf("unused CiliumNetworkPolicy rules %v, NetworkPolicy rules %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d unused CiliumNetworkPolicy rules, %d NetworkPolicy rules", k, got[k], n)
		}
	}
	for _, u := range cu {
		if strings.Contains(u.Rule, "anyone on any port") || strings.Contains(u.Rule, "<error>") {
			t.Errorf("rule counted or shown wrongly: %+v", u)
		}
		if u.Flows == 0 && !strings.Contains(u.Rule, "k8s:k8s-app=kube-dns") {
			t.Errorf("unused: %+v", u)
		}
	}

	// One more rule, for a caller nobody saw, is unused; the rest as before.
	cps[0].Spec.Ingress = append(cps[0].Spec.Ingress, CiliumIngress{FromEndpoints: []Selector{{MatchLabels: map[string]string{"k8s:app": "nobody"}}}})
	cu, err = CiliumUsage(writtenCilium(t, cps), g)
	if err != nil {
		t.Fatal(err)
	}
	got = unused(cu)
	key := cps[0].Metadata["namespace"].(string) + "/" + cps[0].Metadata["name"].(string) + " ingress"
	if got[key] != want[key]+1 {
		t.Errorf("%s: %d unused after adding a rule for nobody, want %d", key, got[key], want[key]+1)
	}
}
