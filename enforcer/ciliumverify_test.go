package enforcer

import (
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema"
)

// writtenCilium renders policies as recommend --flavor cilium writes them
// and reads them back as verify does.
func writtenCilium(t *testing.T, cps []CiliumPolicy) []CiliumNetworkPolicy {
	t.Helper()
	var out []CiliumNetworkPolicy
	for _, cp := range cps {
		y, err := MarshalCilium(cp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseCiliumPolicies(y)
		if err != nil {
			t.Fatalf("%v\n%s", err, y)
		}
		out = append(out, got...)
	}
	return out
}

// verifyCilium runs a verification by CiliumNetworkPolicies only.
func verifyCilium(t *testing.T, flows []schema.Flow, cnps []CiliumNetworkPolicy, leftOut map[string]string) (*Verification, []DeniedFlow) {
	t.Helper()
	v, err := NewVerification(nil, nil, leftOut)
	if err != nil {
		t.Fatal(err)
	}
	unsupported, err := v.SetCilium(cnps)
	if err != nil {
		t.Fatal(err)
	}
	if len(unsupported) > 0 {
		t.Errorf("recommend's Cilium policies have fields not judged: %v", unsupported)
	}
	for i := range flows {
		v.Learn(&flows[i])
	}
	var denied []DeniedFlow
	for i := range flows {
		if d, ok := v.Judge(&flows[i]); ok {
			denied = append(denied, d)
		}
	}
	return v, denied
}

// TestVerifyCiliumRoundTrip: recommend --flavor cilium over the published
// samples writes CiliumNetworkPolicies that verify judges as allowing every
// observed flow but those recommend left out on purpose (the same 20 as
// the NetworkPolicy flavour); a copy with details-v1's ingress rules
// removed (its `ingress: [{}]` kept: default deny) makes its callers'
// flows regressions, blamed on that policy.
func TestVerifyCiliumRoundTrip(t *testing.T) {
	flows := sampleFlows(t)
	g, res := generate(t, flows, DefaultConfig())
	dir := t.TempDir()
	if err := WriteLeftOut(dir, res.Skipped); err != nil {
		t.Fatal(err)
	}
	leftOut, err := LoadLeftOut(dir)
	if err != nil {
		t.Fatal(err)
	}
	cps := ToCilium(res, g)
	cnps := writtenCilium(t, cps)
	if len(cnps) != len(res.Policies) {
		t.Fatalf("%d CiliumNetworkPolicies read back from %d written", len(cnps), len(cps))
	}
	v, denied := verifyCilium(t, flows, cnps, leftOut)
	got := v.Verdict()
	if got.Policies != len(cnps) || got.Checked < 1000 || got.Denied != 20 || got.Intended != 20 || got.Regressions != 0 || got.Failed() {
		t.Errorf("recommended Cilium policies: %+v; want 20 denied, all intended, not failed", got)
	}
	for _, d := range denied {
		if d.Intended == "" {
			t.Errorf("denied but not left out on purpose: %+v", d)
		}
	}

	// The hand-broken copy.
	broken := -1
	for i := range cps {
		if cps[i].Metadata["namespace"] == "bookinfo" && strings.HasSuffix(cps[i].Metadata["name"].(string), "details-v1") {
			broken = i
			cps[i].Spec.Ingress = []CiliumIngress{{}}
		}
	}
	if broken < 0 {
		t.Fatal("no policy for bookinfo/details-v1")
	}
	v, denied = verifyCilium(t, flows, writtenCilium(t, cps), leftOut)
	got = v.Verdict()
	t.Logf("broken: %+v", got)
	if got.Regressions == 0 || got.RegressedEdges == 0 || !got.Failed() {
		t.Fatalf("details-v1 without ingress rules: %+v; want regressions", got)
	}
	for _, d := range denied {
		if d.Intended != "" {
			continue
		}
		if !strings.HasPrefix(d.Dest, "bookinfo/details-v1") || !strings.Contains(d.Reason, "ingress of bookinfo/details-v1") || !strings.Contains(d.Reason, "default deny") {
			t.Errorf("unexpected regression: %+v", d)
		}
	}
	for _, e := range v.Report().Edges() {
		if e.Regression && v.Report().blame(e.Decision) != "bookinfo/"+cps[broken].Metadata["name"].(string) {
			t.Errorf("regression %s blamed on %q", e.Edge, v.Report().blame(e.Decision))
		}
	}
}

// TestVerifyFlavoursAgree: on the published sample flows, the NetworkPolicy
// and the Cilium flavour of recommend's policies agree, flow by flow, on
// allowed or denied (their semantics coincide there: pod selectors,
// namespaces, ports, CIDRs with except).
func TestVerifyFlavoursAgree(t *testing.T) {
	flows := sampleFlows(t)
	g, res := generate(t, flows, DefaultConfig())
	cnps := writtenCilium(t, ToCilium(res, g))
	np, err := NewVerifier(res.Policies)
	if err != nil {
		t.Fatal(err)
	}
	cil, err := NewVerifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	ce, err := NewCiliumEvaluator(cnps)
	if err != nil {
		t.Fatal(err)
	}
	cil.SetCilium(ce)
	for i := range flows {
		np.Learn(&flows[i])
		cil.Learn(&flows[i])
	}
	judged, denied := 0, 0
	for i := range flows {
		a, ok1 := np.Check(&flows[i])
		b, ok2 := cil.Check(&flows[i])
		if ok1 != ok2 {
			t.Fatalf("flow %d judged by one flavour only", i)
		}
		if !ok1 {
			continue
		}
		judged++
		if !a.Allowed {
			denied++
		}
		if a.Allowed != b.Allowed {
			t.Errorf("flow %d %s → %s %s/%d: NetworkPolicy %v (%s), Cilium %v (%s)", i, flows[i].Src.Pod, flows[i].Dst.Pod, flows[i].Protocol, flows[i].DstPort, a.Allowed, a.Reason, b.Allowed, b.Reason)
		}
	}
	t.Logf("%d judged, %d denied", judged, denied)
	if judged < 1000 || denied == 0 {
		t.Errorf("%d flows judged, %d denied: the comparison says little", judged, denied)
	}
}

// Cilium enforces NetworkPolicies and CiliumNetworkPolicies together: a
// side in default deny by either allows what a rule of either allows; a
// deny rule wins over both.
func TestVerifyNetworkPolicyAndCiliumTogether(t *testing.T) {
	nps, err := ParsePolicies([]byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`))
	if err != nil {
		t.Fatal(err)
	}
	cnps, err := ParseCiliumPolicies([]byte(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client, tier: untrusted}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	flow := func(src, dst map[string]string, port uint16) schema.Flow {
		return schema.Flow{Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded, Protocol: "TCP", DstPort: port,
			SrcIP: mustAddr("10.0.0.1"), DstIP: mustAddr("10.0.0.2"),
			Src: schema.Endpoint{Namespace: "shop", Pod: "a", Workload: src["app"], WorkloadKind: "Deployment", Labels: src},
			Dst: schema.Endpoint{Namespace: "shop", Pod: "b", Workload: dst["app"], WorkloadKind: "Deployment", Labels: dst}}
	}
	client, untrusted := map[string]string{"app": "client"}, map[string]string{"app": "client", "tier": "untrusted"}
	web, db := map[string]string{"app": "web"}, map[string]string{"app": "db"}
	for _, c := range []struct {
		what    string
		f       schema.Flow
		allowed bool
	}{
		{"the CNP allows what the NetworkPolicy's default deny does not", flow(client, web, 8080), true},
		{"neither allows another port", flow(client, web, 9090), false},
		{"the NetworkPolicy isolates db, which no CNP selects", flow(client, db, 5432), false},
		{"the deny rule wins", flow(untrusted, web, 8080), false},
	} {
		v, err := NewVerifier(nps)
		if err != nil {
			t.Fatal(err)
		}
		ce, err := NewCiliumEvaluator(cnps)
		if err != nil {
			t.Fatal(err)
		}
		v.SetCilium(ce)
		d, ok := v.Check(&c.f)
		if !ok || d.Allowed != c.allowed {
			t.Errorf("%s: judged %v, allowed %v (%s); want %v", c.what, ok, d.Allowed, d.Reason, c.allowed)
		}
	}
}

// Policies are read as the API server would take them: unknown fields and
// policies without a rule are errors; lists and clusterwide policies are
// read.
func TestParseCiliumPolicies(t *testing.T) {
	for _, bad := range []string{
		"kind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}, ingres: [{}]}\n",
		"kind: CiliumNetworkPolicy\nmetadata: {name: x}\n",
		"kind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}, egress: [{toPorts: [{ports: [{port: \"80\", protocol: TCPP}]}]}]}\n",
	} {
		cps, err := ParseCiliumPolicies([]byte(bad))
		if err == nil {
			// An invalid value passes the decoder but not Cilium's sanitiser.
			if _, err = NewCiliumEvaluator(cps); err == nil {
				t.Errorf("accepted:\n%s", bad)
			}
		}
	}
	cps, err := ParseCiliumPolicies([]byte(`apiVersion: v1
kind: List
items:
- apiVersion: cilium.io/v2
  kind: CiliumClusterwideNetworkPolicy
  metadata: {name: lockdown}
  spec: {endpointSelector: {}, ingress: [{}]}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: other}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: two}
specs:
- {endpointSelector: {}, egress: [{}]}
- {endpointSelector: {matchLabels: {app: x}}, ingress: [{}]}
`))
	if err != nil || len(cps) != 2 || cps[0].Key() != "lockdown" || !cps[0].Clusterwide() || cps[1].Key() != "default/two" || len(cps[1].Specs) != 2 {
		t.Fatalf("%v: %+v", err, cps)
	}
}
