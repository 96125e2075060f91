package enforcer

import (
	"context"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// verifyAll runs a verification as verify does: a learning pass, then a
// judging pass; it returns the denied flows.
func verifyAll(t *testing.T, flows []schema.Flow, nps []networkingv1.NetworkPolicy, leftOut map[string]string) (*Verification, []DeniedFlow) {
	t.Helper()
	v, err := NewVerification(nps, nil, leftOut)
	if err != nil {
		t.Fatal(err)
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

// TestVerificationSplitsIntendedFromRegressions: on the published samples
// the recommended policies deny only the edges recommend left out (the
// guardrails' 20 flows, on 2 of the 3 edges left out), which are intended and pass the gate;
// without the left-out record the same denials are regressions and fail
// it; without details-v1's policy its callers lose access, named per edge.
func TestVerificationSplitsIntendedFromRegressions(t *testing.T) {
	flows := sampleFlows(t)
	_, res := generate(t, flows, DefaultConfig())
	dir := t.TempDir()
	if err := WriteLeftOut(dir, res.Skipped); err != nil {
		t.Fatal(err)
	}
	leftOut, err := LoadLeftOut(dir)
	if err != nil {
		t.Fatal(err)
	}

	v, denied := verifyAll(t, flows, res.Policies, leftOut)
	got := v.Verdict()
	if got.Policies != len(res.Policies) || got.Checked < 1000 || got.Denied != 20 || got.Intended != 20 || got.Regressions != 0 || got.RegressedEdges != 0 || got.Failed() {
		t.Errorf("recommended policies with their left-out record: %+v; want 20 denied, all intended, not failed", got)
	}
	if len(denied) != 20 {
		t.Fatalf("%d denied flows returned, want 20", len(denied))
	}
	for _, d := range denied {
		if d.Intended == "" || d.Reason == "" || d.Source == "" || d.Dest == "" || d.Port == 0 {
			t.Errorf("denied flow without its intent, reason or ends: %+v", d)
		}
	}

	v, _ = verifyAll(t, flows, res.Policies, nil)
	if got := v.Verdict(); got.Denied != 20 || got.Intended != 0 || got.Regressions != 20 || got.RegressedEdges != 2 || !got.Failed() {
		t.Errorf("without the left-out record: %+v; want the 20 denials as regressions on 2 edges, failed", got)
	}

	var without []networkingv1.NetworkPolicy
	for _, np := range res.Policies {
		if np.Namespace == "bookinfo" && np.Name == "flowwarden-details-v1" {
			continue
		}
		without = append(without, np)
	}
	if len(without) != len(res.Policies)-1 {
		t.Fatal("no policy bookinfo/flowwarden-details-v1 among the recommended")
	}
	v, denied = verifyAll(t, flows, without, leftOut)
	got = v.Verdict()
	if got.Regressions == 0 || !got.Failed() || got.Intended != 20 {
		t.Fatalf("without details-v1's policy: %+v; want regressions beside the 20 intended", got)
	}
	regressed := map[string]bool{}
	for _, e := range v.Report().Edges() {
		if e.Regression {
			regressed[e.Edge] = true
		}
	}
	if !regressed["bookinfo/productpage-v1 → bookinfo/details-v1 TCP/9080"] || len(regressed) != got.RegressedEdges {
		t.Errorf("regressed edges %v (verdict says %d); want productpage → details:9080 among them", regressed, got.RegressedEdges)
	}
	toDetails := 0
	for _, d := range denied {
		if d.Port == 9080 && d.Intended == "" && d.Observed == string(schema.VerdictForwarded) && strings.HasPrefix(d.Dest, "bookinfo/details-v1-") {
			toDetails++
		}
	}
	if toDetails == 0 {
		t.Errorf("no forwarded flow to a bookinfo/details-v1 pod among the denied: %+v", denied)
	}
}

// TestVerificationLayer7: requests are judged only once layer-7 policies
// are set; one they deny is counted and fails the gate.
func TestVerificationLayer7(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	cps, _, res := ciliumL7(t, flows, DefaultL7Config())
	set := readBackCilium(t, cps)
	v, err := NewVerification(res.Policies, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, denied := v.JudgeRequest(&flows[0]); denied || v.Verdict().L7Judged != 0 {
		t.Fatal("a request was judged before any layer-7 policy was set")
	}
	v.SetL7(&set)
	var probe *schema.Flow
	for i := range flows {
		if _, denied := v.JudgeRequest(&flows[i]); denied {
			t.Errorf("observed request %s %s denied", flows[i].HTTPMethod, flows[i].HTTPPath)
		}
		if ok, _, _ := set.JudgeL7(&flows[i]); ok && probe == nil {
			probe = &flows[i]
		}
	}
	got := v.Verdict()
	if got.L7Judged < 100 || got.L7Denied != 0 || got.Failed() {
		t.Fatalf("observed requests: %+v; want them judged and allowed", got)
	}
	bad := *probe
	bad.HTTPMethod, bad.HTTPPath = "DELETE", "/admin"
	r, denied := v.JudgeRequest(&bad)
	if !denied || r.Method != "DELETE" || r.Path != "/admin" || r.Reason == "" || r.Port != bad.DstPort {
		t.Errorf("DELETE /admin: denied %v, %+v", denied, r)
	}
	if got := v.Verdict(); got.L7Denied != 1 || !got.Failed() {
		t.Errorf("after a denied request: %+v; want 1 denied, failed", got)
	}
}
