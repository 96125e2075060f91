package enforcer

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	secv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// meshRequest is an inbound request a sidecar logged: caller ns/wl (with
// its service account sa, mutual TLS when sa is set) to dst on port.
func meshRequest(at time.Time, callerNS, callerWL, ip, sa, dstNS, dstWL string, port uint16, method, path string) schema.Flow {
	f := schema.Flow{Time: at, Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded, Direction: schema.DirectionIngress,
		Protocol: "TCP", SrcIP: netip.MustParseAddr(ip), DstIP: netip.MustParseAddr("10.0.3.10"), DstPort: port,
		Src:        schema.Endpoint{Namespace: callerNS, Workload: callerWL, Labels: map[string]string{"app": callerWL}},
		Dst:        schema.Endpoint{Namespace: dstNS, Workload: dstWL, Labels: map[string]string{"app": dstWL, "pod-template-hash": "7d9f8b6c5"}},
		HTTPMethod: method, HTTPPath: path}
	if sa != "" {
		f.MTLS = true
		f.SrcPrincipal = "spiffe://cluster.local/ns/" + callerNS + "/sa/" + sa
	}
	return f
}

// istioScan is a small mesh: checkout and frontend call ledger and catalog
// all hour; cart calls catalog all hour, then during its lateral scan
// (09:40 to 09:43) reaches ledger for the first time over mutual TLS.
func istioScan(cartSA string) (*IstioObservations, schema.Finding) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	obs := NewIstioObservations("")
	for m := 0; m < 60; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		for _, f := range []schema.Flow{
			meshRequest(at, "shop", "checkout", "10.0.1.14", "checkout", "payments", "ledger", 8080, "GET", "/v1/entries"),
			meshRequest(at, "shop", "frontend", "10.0.1.10", "frontend", "shop", "catalog", 8080, "GET", "/items"),
			meshRequest(at, "shop", "cart", "10.0.1.12", cartSA, "shop", "catalog", 8080, "GET", "/items"),
		} {
			obs.Add(&f)
		}
	}
	for s := 0; s < 3; s++ {
		f := meshRequest(t0.Add(40*time.Minute+time.Duration(s)*time.Minute), "shop", "cart", "10.0.1.12", cartSA, "payments", "ledger", 8080, "POST", "/v1/transfers")
		obs.Add(&f)
	}
	scan := schema.Finding{ID: "f1", Detector: "lateral-scan", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "cart",
		Start: t0.Add(40 * time.Minute), End: t0.Add(43 * time.Minute), Evidence: schema.Evidence{Window: time.Minute, Flows: 300}}
	return obs, scan
}

func req(obs *IstioObservations, caller, workload string) IstioRequest {
	for r := range obs.Requests {
		if r.Caller == caller && r.Workload == workload {
			return r
		}
	}
	panic("no request " + caller + " → " + workload)
}

func allows(rec *IstioRecommendation, r IstioRequest, labels map[string]string) bool {
	ns := r.Workload[:len(r.Workload)-len("/"+labels["app"])]
	ok, _ := IstioAllows(rec.Policies, ns, labels, r)
	return ok
}

// A lateral scan's new caller edge is held back: the generated
// AuthorizationPolicies (judged by IstioAllows) deny cart's requests to
// ledger, while cart's older calls and everyone else's stay allowed;
// without the finding (--allow-flagged) the request is allowed.
func TestRecommendIstioHoldsBackScanCaller(t *testing.T) {
	obs, scan := istioScan("cart")
	ledger, catalog := map[string]string{"app": "ledger"}, map[string]string{"app": "catalog"}
	cartLedger := req(obs, "shop/cart", "payments/ledger")

	cfg := DefaultL7Config()
	cfg.Flagged = []schema.Finding{scan,
		// Egress findings concern no inbound request.
		{ID: "f2", Detector: "beacon", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "cart", Peer: "10.0.3.10",
			Start: scan.Start, End: scan.End}}
	rec, err := RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		t.Fatal(err) // the proof treats the held-back request as an intended denial
	}
	if len(rec.HeldBack) != 1 || rec.HeldBack[0].Request != cartLedger || rec.HeldBack[0].Count != 3 ||
		len(rec.HeldBack[0].Flags) != 1 || rec.HeldBack[0].Flags[0].Detector != "lateral-scan" {
		t.Fatalf("held back %+v, want cart → ledger for the lateral-scan only", rec.HeldBack)
	}
	if allows(rec, cartLedger, ledger) {
		t.Error("the scanning caller's new request to ledger is allowed")
	}
	for _, r := range []IstioRequest{req(obs, "shop/checkout", "payments/ledger")} {
		if !allows(rec, r, ledger) {
			t.Errorf("%s is denied", r)
		}
	}
	for _, c := range []string{"shop/cart", "shop/frontend"} {
		if r := req(obs, c, "shop/catalog"); !allows(rec, r, catalog) {
			t.Errorf("%s is denied", r)
		}
	}

	cfg.Flagged = nil // --allow-flagged
	rec, err = RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.HeldBack) != 0 || !allows(rec, cartLedger, ledger) {
		t.Errorf("without findings: held back %+v, cart → ledger allowed %v", rec.HeldBack, allows(rec, cartLedger, ledger))
	}
}

// When the scanning caller shares its principal with a caller that stays
// allowed for the same operation, no AuthorizationPolicy can tell them
// apart: the request is listed as not held back (allowed), and the
// proof does not fail.
func TestRecommendIstioCannotHoldSharedPrincipal(t *testing.T) {
	obs, scan := istioScan("default")
	f := meshRequest(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), "shop", "orders", "10.0.1.20", "default", "payments", "ledger", 8080, "POST", "/v1/transfers")
	obs.Add(&f)
	cfg := DefaultL7Config()
	cfg.Flagged = []schema.Finding{scan}
	rec, err := RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.HeldBack) != 0 || len(rec.NotHeld) != 1 || rec.NotHeld[0].Request.Caller != "shop/cart" {
		t.Errorf("held back %+v, not held %+v", rec.HeldBack, rec.NotHeld)
	}
}

// A workload whose every request is held back gets an ALLOW policy
// without rules (Istio's allow-nothing), not none (which would allow all).
func TestRecommendIstioHoldsBackAllOfAWorkload(t *testing.T) {
	obs, scan := istioScan("cart")
	t0 := scan.Start
	f := meshRequest(t0.Add(30*time.Second), "shop", "cart", "10.0.1.12", "cart", "payments", "vault", 8200, "GET", "/v1/secret")
	f.Dst.Labels = map[string]string{"app": "vault"}
	obs.Add(&f)
	cfg := DefaultL7Config()
	cfg.Flagged = []schema.Finding{scan}
	rec, err := RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	var vault *AuthorizationPolicy
	for i := range rec.Policies {
		if rec.Policies[i].Metadata["name"] == "flowwarden-vault" {
			vault = &rec.Policies[i]
		}
	}
	if vault == nil || len(vault.Spec.Rules) != 0 {
		t.Fatalf("vault's policy: %+v", vault)
	}
	if allows(rec, req(obs, "shop/cart", "payments/vault"), map[string]string{"app": "vault"}) {
		t.Error("cart → vault is allowed")
	}
	y, err := MarshalIstio(*vault)
	if err != nil {
		t.Fatal(err)
	}
	decodeStrictly(t, y, &secv1.AuthorizationPolicy{})
}

// The proof fails when a held-back request would still be allowed.
func TestProveIstioHeldBackMustBeDenied(t *testing.T) {
	obs, scan := istioScan("cart")
	aps, _ := obs.IstioPolicies(DefaultL7Config(), "flowwarden-", nil) // learnt everything
	held, _ := obs.istioHeldBack([]schema.Finding{scan})
	if len(held) != 1 {
		t.Fatalf("held %v", held)
	}
	if bad := obs.ProveIstio(aps, held); len(bad) != 1 {
		t.Errorf("proof of policies allowing the held-back request: %q", bad)
	}
	var proof *L7ProofError
	if _, err := RecommendIstio(obs, DefaultL7Config(), "flowwarden-"); errors.As(err, &proof) {
		t.Error(err)
	}
}

// Every detector with a hold-back rule for NetworkPolicies has one (or a
// reason for none) for AuthorizationPolicies, and the reverse.
func TestIstioHoldBackRulesCoverHoldBackRules(t *testing.T) {
	a, b := slices.Sorted(maps.Keys(holdBackRules)), slices.Sorted(maps.Keys(istioHoldBackRules))
	if !slices.Equal(a, b) {
		t.Errorf("NetworkPolicy rules for %v, Istio rules for %v", a, b)
	}
	for d, rule := range istioHoldBackRules {
		if rule == "" && istioHoldBackNone[d] == "" {
			t.Errorf("%s: no Istio rule and no reason", d)
		}
	}
}
