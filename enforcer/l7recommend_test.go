package enforcer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// TestRecommendIstio: no requests is refused; otherwise one proven policy
// per workload, written with a STRICT PeerAuthentication only where
// nobody called in plaintext, whose callers are listed in order.
func TestRecommendIstio(t *testing.T) {
	if _, err := RecommendIstio(NewIstioObservations(""), DefaultL7Config(), "flowwarden-"); !errors.Is(err, ErrNoIstioRequests) {
		t.Errorf("no requests: %v", err)
	}
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	web, api, checkout, batch := pod("shop", "web", "web"), pod("pay", "api", "api"), pod("pay", "checkout", "checkout"), pod("legacy", "batch", "default")
	obs := NewIstioObservations("")
	req := func(src schema.Endpoint, srcIP string, dst schema.Endpoint, dstIP string, mtls bool, path string) {
		f := schema.Flow{Time: t0, Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded, Direction: schema.DirectionIngress,
			Protocol: "TCP", SrcIP: mustAddr(srcIP), DstIP: mustAddr(dstIP), SrcPort: 40000, DstPort: 8080, Src: src, Dst: dst,
			L7Type: "http", HTTPMethod: "GET", HTTPPath: path, MTLS: mtls}
		if mtls {
			f.SrcPrincipal = "spiffe://cluster.local/ns/" + src.Namespace + "/sa/" + src.Labels["io.cilium.k8s.policy.serviceaccount"]
		}
		obs.Add(&f)
	}
	req(checkout, "10.1.1.11", api, "10.1.1.10", true, "/v1/charge")
	req(checkout, "10.1.1.11", web, "10.1.0.10", true, "/cart")
	req(batch, "10.1.2.5", web, "10.1.0.10", false, "/export.csv")
	req(schema.Endpoint{}, "192.168.10.5", web, "10.1.0.10", false, "/metrics")

	rec, err := RecommendIstio(obs, DefaultL7Config(), "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Policies) != 2 || rec.Requests != 4 || len(rec.Skipped) != 0 || len(rec.Readiness) != 2 {
		t.Fatalf("%d policies from %d requests, skipped %v, readiness %+v", len(rec.Policies), rec.Requests, rec.Skipped, rec.Readiness)
	}
	shop := rec.Readiness[1]
	if got := shop.PlaintextCallers(); shop.Namespace != "shop" || !slices.Equal(got, []string{"192.168.10.5 (1)", "legacy/batch (1)"}) {
		t.Errorf("plaintext callers of %s: %q", shop.Namespace, got)
	}
	dir := t.TempDir()
	if err := rec.WriteDir(dir, "flowwarden-"); err != nil {
		t.Fatal(err)
	}
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	if want := []string{"pay/api.authz.yaml", "pay/peer-authentication.yaml", "shop/web.authz.yaml"}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v (no STRICT where a caller used plaintext)", files, want)
	}
	var set L7Policies
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseL7Policies(b, &set); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if len(set.Istio) != 2 {
		t.Errorf("%d AuthorizationPolicies read back", len(set.Istio))
	}
	if e := (&L7ProofError{Kind: "Istio", Problems: []string{"a", "b"}}).Error(); e != "2 Istio checks failed: not written (a bug; please report it)" {
		t.Errorf("proof error %q", e)
	}
}

// TestRecommendCiliumL7: the rules are added and proven, a port's note
// comes once, and WriteCiliumDir writes each policy where its path says,
// in the order given.
func TestRecommendCiliumL7(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	g, res := generate(t, flows, DefaultConfig())
	obs := NewL7Observations()
	for i := range flows {
		obs.Add(&flows[i])
	}
	cps := ToCilium(res, g)
	notes, err := RecommendCiliumL7(cps, obs, DefaultL7Config(), "flowwarden-")
	if err != nil {
		t.Fatal(err)
	}
	http := 0
	for i, n := range notes {
		if i > 0 && n == notes[i-1] {
			t.Errorf("note %q twice in a row", n)
		}
		if n.L7 == "http" {
			http++
		}
	}
	if http == 0 {
		t.Fatalf("no port got HTTP rules: %v", notes)
	}
	if bad := ProveCiliumL7(cps, obs, "flowwarden-"); len(bad) != 0 {
		t.Errorf("the returned policies fail their proof: %v", bad)
	}
	dir := t.TempDir()
	paths, err := WriteCiliumDir(dir, cps, "flowwarden-")
	if err != nil || len(paths) != len(cps) {
		t.Fatalf("%d paths for %d policies: %v", len(paths), len(cps), err)
	}
	for i, p := range paths {
		ns, _ := cps[i].Metadata["namespace"].(string)
		name, _ := cps[i].Metadata["name"].(string)
		if p != filepath.Join(ns, strings.TrimPrefix(name, "flowwarden-")+".yaml") {
			t.Errorf("policy %d (%s/%s) written to %s", i, ns, name, p)
		}
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := MarshalCilium(cps[i])
		if string(b) != string(want) {
			t.Errorf("%s holds other than its policy", p)
		}
	}
}
