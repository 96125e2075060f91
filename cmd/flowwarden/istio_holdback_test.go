package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/enforcer"
)

// On the plaintext-in-mesh breach scenario (payments STRICT by the
// PeerAuthentications in force, the ledger's admin port exempt),
// shop/debug-shell calls payments/ledger in plaintext: the finding holds
// its requests back, so the generated AuthorizationPolicies (judged with
// enforcer.IstioAllows) deny them, while checkout's mutual-TLS requests,
// the scraper on the exempt port, kubelet's probes and the plaintext in
// the permissive shop namespace stay allowed. Without the findings
// (--allow-flagged) debug-shell is allowed, by its address.
func TestRecommendIstioHoldsBackPlaintextScenario(t *testing.T) {
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, "plaintext-in-mesh.flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	pas, err := analyze.ReadPeerAuthentications(filepath.Join(scenarioDir, "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	dcfg := analyze.DefaultConfig()
	dcfg.PlaintextInMesh.PeerAuthentications = pas
	var found analyze.Collector
	eng, err := analyze.NewEngine(dcfg, &found, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Write(context.Background(), flows...); err != nil {
		t.Fatal(err)
	}
	eng.Flush()
	obs := enforcer.NewIstioObservations("")
	for i := range flows {
		obs.Add(&flows[i])
	}
	judge := func(rec *enforcer.IstioRecommendation) map[string]bool {
		allowed := map[string]bool{}
		for r := range obs.Requests {
			ns, wl, _ := strings.Cut(r.Workload, "/")
			ok, _ := enforcer.IstioAllows(rec.Policies, ns, map[string]string{"app": wl}, r)
			k := r.Caller + " → " + r.Workload + " " + r.Method
			if v, seen := allowed[k]; !seen || v {
				allowed[k] = ok
			}
		}
		return allowed
	}
	cfg := enforcer.DefaultL7Config()
	cfg.Flagged = found.Findings()
	rec, err := enforcer.RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		var proof *enforcer.L7ProofError
		if errors.As(err, &proof) {
			t.Fatalf("%v: %q", err, proof.Problems)
		}
		t.Fatal(err)
	}
	if len(rec.HeldBack) == 0 {
		t.Fatalf("nothing held back; findings %+v", cfg.Flagged)
	}
	for _, h := range rec.HeldBack {
		if h.Request.Caller != "shop/debug-shell" || h.Request.MTLS || h.Flags[0].Detector != "plaintext-in-mesh" {
			t.Errorf("held back %s for %v", h.Request, h.Flags)
		}
	}
	got := judge(rec)
	want := map[string]bool{
		"shop/debug-shell → payments/ledger GET":      false,
		"shop/checkout → payments/ledger GET":         true,
		"monitoring/prometheus → payments/ledger GET": true,
		"10.0.0.1 → payments/ledger GET":              true,
		"shop/frontend → shop/catalog GET":            true,
	}
	for k, v := range want {
		if a, ok := got[k]; !ok || a != v {
			t.Errorf("%s: allowed %v (observed %v), want %v", k, a, ok, v)
		}
	}

	cfg.Flagged = nil // --allow-flagged
	rec, err = enforcer.RecommendIstio(obs, cfg, "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.HeldBack) != 0 || !judge(rec)["shop/debug-shell → payments/ledger GET"] {
		t.Errorf("--allow-flagged: held back %+v, debug-shell denied", rec.HeldBack)
	}
}

// recommend --flavor istio over files runs the detectors in the same
// pass: with bookinfo held to mutual TLS (--strict-mtls-namespace), the
// plaintext caller of ratings is held back (listed with its finding, no
// ipBlocks rule), and bookinfo gets its STRICT PeerAuthentication; with
// --allow-flagged it is allowed by its address, as before.
func TestRecommendIstioHoldsBackFlaggedCaller(t *testing.T) {
	line := func(path, remote, sni string) string {
		return `[2021-10-04T14:31:02.100Z] "GET ` + path + ` HTTP/1.1" 200 - via_upstream - "-" 0 295 7 6 "-" "python-requests/2.21.0" "r-1" "ratings:9080" "127.0.0.1:9080" inbound|9080|| 127.0.0.1:41854 10.156.1.12:9080 ` + remote + ` ` + sni + ` default`
	}
	mtls := "outbound_.9080_._.ratings.bookinfo.svc.cluster.local"
	log := strings.Join([]string{
		line("/ratings/0", "10.156.2.8:40110", mtls),
		line("/ratings/1", "10.156.2.8:40112", mtls),
		line("/ratings/2", "10.156.2.8:40114", mtls),
		line("/ratings/0", "10.99.0.5:50000", "-"),
	}, "\n")
	envoyLog := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(envoyLog, []byte(log+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"recommend", "--flavor", "istio", "--hubble-file", "../../testdata/hubble/basic-sample-348-http-flows.json",
		"--envoy-file", envoyLog, "--strict-mtls-namespace", "bookinfo", "--log-level", "warn"}

	dir := t.TempDir()
	out, err := run(t, append(args, "--out", dir)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "1 requests held back as evidence of the detectors' findings") ||
		!strings.Contains(out, "held back: 10.99.0.5 → bookinfo/ratings-v1 TCP/9080 GET /ratings/0 (plaintext) (1 requests): evidence of warning plaintext-in-mesh on bookinfo/ratings-v1") ||
		!strings.Contains(out, "mTLS STRICT ready: bookinfo") {
		t.Errorf("output:\n%s", out)
	}
	set, err := enforcer.LoadL7Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	y, _ := os.ReadFile(filepath.Join(dir, "bookinfo", "ratings-v1.authz.yaml"))
	if len(set.Istio) != 1 || strings.Contains(string(y), "10.99.0.5") || !strings.Contains(string(y), "/ratings/*") {
		t.Errorf("policies %d:\n%s", len(set.Istio), y)
	}
	if _, err := os.Stat(filepath.Join(dir, "bookinfo", "peer-authentication.yaml")); err != nil {
		t.Error(err)
	}

	dir = t.TempDir()
	out, err = run(t, append(args, "--out", dir, "-o", "json")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var sum istioSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(sum.HeldBack) != 1 || sum.HeldBack[0].From != "10.99.0.5" || sum.HeldBack[0].Request != "GET /ratings/0 (plaintext)" ||
		len(sum.HeldBack[0].Findings) != 1 || sum.HeldBack[0].Findings[0].Detector != "plaintext-in-mesh" {
		t.Errorf("held_back %+v", sum.HeldBack)
	}

	dir = t.TempDir()
	out, err = run(t, append(args, "--out", dir, "--allow-flagged")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	y, _ = os.ReadFile(filepath.Join(dir, "bookinfo", "ratings-v1.authz.yaml"))
	if strings.Contains(out, "held back:") || !strings.Contains(string(y), "- 10.99.0.5/32") {
		t.Errorf("--allow-flagged:\n%s\n%s", out, y)
	}
}
