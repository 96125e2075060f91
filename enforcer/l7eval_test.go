package enforcer

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// The written Cilium L7 policies, read back as verify reads them, allow
// every observed request of the published flows and deny DELETE /admin.
func TestJudgeL7CiliumWrittenPolicies(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	cps, _, _ := ciliumL7(t, flows, DefaultL7Config())
	set := readBackCilium(t, cps)
	if set.Empty() {
		t.Fatal("no L7 rules read back")
	}
	judged := 0
	for i := range flows {
		f := flows[i]
		ok, allowed, why := set.JudgeL7(&f)
		if !ok {
			continue
		}
		judged++
		if !allowed {
			t.Errorf("observed %s %s denied: %s", f.HTTPMethod, f.HTTPPath, why)
		}
		f.HTTPMethod, f.HTTPPath = "DELETE", "/admin"
		if ok, allowed, why := set.JudgeL7(&f); !ok || allowed {
			t.Errorf("DELETE /admin judged %v allowed %v (%s)", ok, allowed, why)
		}
	}
	if judged < 100 {
		t.Errorf("%d requests judged", judged)
	}
}

// The written AuthorizationPolicy, read back, allows the published inbound
// request and denies it with another method or from another caller.
func TestJudgeL7IstioWrittenPolicies(t *testing.T) {
	enrich := ipEnricher{
		netip.MustParseAddr("10.44.1.27"): pod("foo", "httpbin", "httpbin"),
		netip.MustParseAddr("10.44.1.23"): pod("foo", "sleep", "sleep"),
	}
	var flows []schema.Flow
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { flows = append(flows, fs...); return nil })
	var stats ingest.Stats
	if err := envoy.ReadFile(context.Background(), "../testdata/istio-envoy/istio-json-accesslog-official-docs-transcribed.jsonl", ingest.Enrich(enrich, sink), &stats); err != nil {
		t.Fatal(err)
	}
	obs := NewIstioObservations("")
	for i := range flows {
		obs.Add(&flows[i])
	}
	var set L7Policies
	aps, _ := obs.IstioPolicies(DefaultL7Config(), "flowwarden-", nil)
	for _, ap := range aps {
		y, _ := MarshalIstio(ap)
		if err := ParseL7Policies(y, &set); err != nil {
			t.Fatal(err)
		}
	}
	judged := 0
	for _, f := range flows {
		ok, allowed, why := set.JudgeL7(&f)
		if !ok {
			continue
		}
		judged++
		if !allowed {
			t.Errorf("observed request denied: %s", why)
		}
		g := f
		g.HTTPMethod = "DELETE"
		if _, allowed, _ := set.JudgeL7(&g); allowed {
			t.Error("DELETE allowed")
		}
		g = f
		g.SrcPrincipal, g.Src = "spiffe://cluster.local/ns/bar/sa/x", pod("bar", "x", "x")
		if _, allowed, _ := set.JudgeL7(&g); allowed {
			t.Error("another caller allowed")
		}
	}
	if judged != 1 {
		t.Errorf("%d judged", judged)
	}
}

// Policies flowwarden cannot judge are listed, not misjudged.
func TestParseL7PoliciesListsUnsupported(t *testing.T) {
	var set L7Policies
	docs := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: a}\nspec:\n  action: DENY\n  rules: [{}]\n" +
		"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: w, namespace: a}\nspec:\n  rules:\n  - when: [{key: \"request.headers[x]\", values: [y]}]\n" +
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
	if err := ParseL7Policies([]byte(docs), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Istio) != 0 || len(set.Unsupported) != 2 || !set.Empty() {
		t.Errorf("istio %d, unsupported %q", len(set.Istio), set.Unsupported)
	}
}

// The report's L7 part counts the requests each rule allowed: the written
// rules all matched something; a rule added by hand that nobody used is
// listed as unused.
func TestL7UsageReport(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	cps, _, _ := ciliumL7(t, flows, DefaultL7Config())
	for i := range cps {
		if cps[i].Metadata["name"] == "flowwarden-prometheus" {
			for j := range cps[i].Spec.Egress {
				for k := range cps[i].Spec.Egress[j].ToPorts {
					if r := cps[i].Spec.Egress[j].ToPorts[k].Rules; r != nil && len(r.HTTP) > 0 {
						r.HTTP = append(r.HTTP, HTTPRule{Method: "^DELETE$", Path: "^/admin$"})
					}
				}
			}
		}
	}
	u := NewL7Usage(&L7Policies{Cilium: cps})
	for i := range flows {
		u.Add(&flows[i])
	}
	unused := u.Unused()
	if u.Judged < 100 || u.Denied != 0 || len(unused) == 0 {
		t.Fatalf("judged %d denied %d unused %q", u.Judged, u.Denied, unused)
	}
	// prometheus's egress rules all allowed requests but the one added by
	// hand (a rule on an ingress whose pods' labels the sample does not
	// give cannot be matched to a request, so it counts none).
	sawAdded := false
	for _, k := range unused {
		added := strings.Contains(k, "method ^DELETE$ path ^/admin$")
		sawAdded = sawAdded || added
		if strings.Contains(k, "flowwarden-prometheus egress") && !added {
			t.Errorf("a generated rule is unused: %s", k)
		}
	}
	if !sawAdded {
		t.Errorf("the unused DELETE /admin rule is not listed: %q", unused)
	}
	var md strings.Builder
	if err := u.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "rules allowed no observed request") {
		t.Errorf("report:\n%s", md.String())
	}
}
