package enforcer

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TestReportMTLSSection: the report's mTLS coverage section in Markdown,
// HTML and JSON: per namespace the requests, the share secured, the mode in
// force and the plaintext receivers (the rest counted); the report's
// namespaces without mesh traffic named; and, with no mesh traffic at all,
// one plain sentence.
func TestReportMTLSSection(t *testing.T) {
	flows := sampleFlows(t)
	build := func(mesh []schema.MeshNamespace, policies bool) *Report {
		b := NewReportBuilder()
		for i := range flows {
			b.Add(&flows[i])
		}
		b.Mesh, b.MeshPolicies = mesh, policies
		r, err := b.Build(nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	render := func(r *Report) (md, html, js string) {
		var a, b, c strings.Builder
		if err := r.WriteMarkdown(&a); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteJSON(&c); err != nil {
			t.Fatal(err)
		}
		return a.String(), b.String(), c.String()
	}
	md, html, js := render(build(nil, false))
	for name, s := range map[string]string{"md": md, "html": html} {
		if !strings.Contains(s, "No mesh traffic was seen") {
			t.Errorf("%s: the empty case does not say no mesh traffic was seen", name)
		}
	}
	if !strings.Contains(js, `"mtls_coverage": {`) || !strings.Contains(js, `"namespaces": []`) {
		t.Errorf("report.json without mesh traffic:\n%s", js)
	}

	pay := schema.MeshNamespace{NamespaceCoverage: schema.NamespaceCoverage{Namespace: "payments", Secured: 9, Total: 12, Ratio: 0.75},
		PeerAuthentication: "STRICT", PeerAuthenticationFrom: "payments/default", PlaintextReceivers: 3,
		Plaintext: []schema.PlaintextReceiver{{Workload: "payments/ledger", Port: 8080, Requests: 2, Mode: "STRICT"}, {Workload: "payments/api", Port: 80, Requests: 1, Mode: "STRICT"}}}
	r := build([]schema.MeshNamespace{pay}, true)
	if r.MTLS.Requests != 12 || r.MTLS.Secured != 9 || r.MTLS.Ratio != 0.75 {
		t.Errorf("totals %+v", r.MTLS)
	}
	md, html, js = render(r)
	row := "| payments | 12 | 75.0% | STRICT (payments/default) | payments/ledger:8080 (2) STRICT, payments/api:80 (1) STRICT, and 1 more |"
	if !strings.Contains(md, row) {
		t.Errorf("report.md lacks %q:\n%s", row, md)
	}
	if !strings.Contains(md, "Left out, no inbound mesh requests seen: ") || len(r.MTLS.WithoutMeshTraffic) == 0 {
		t.Errorf("the sample's namespaces without mesh traffic are not named: %v", r.MTLS.WithoutMeshTraffic)
	}
	for _, s := range []string{`id="mtls-coverage"`, "<td>payments</td><td>12</td><td>75.0%</td><td>STRICT (payments/default)</td>"} {
		if !strings.Contains(html, s) {
			t.Errorf("report.html lacks %q", s)
		}
	}
	var back struct {
		MTLS MTLSReport `json:"mtls_coverage"`
	}
	if err := json.Unmarshal([]byte(js), &back); err != nil || len(back.MTLS.Namespaces) != 1 || back.MTLS.Namespaces[0].Plaintext[0].Workload != "payments/ledger" ||
		back.MTLS.Namespaces[0].PeerAuthentication != "STRICT" || back.MTLS.Namespaces[0].Total != 12 {
		t.Errorf("report.json's mtls_coverage does not read back (%v): %+v", err, back.MTLS)
	}
	for _, key := range []string{`"peer_authentication": "STRICT"`, `"plaintext_receivers": [`, `"plaintext_receivers_total": 3`, `"secured": 9`, `"total": 12`, `"without_mesh_traffic": [`} {
		if !strings.Contains(js, key) {
			t.Errorf("report.json lacks %s", key)
		}
	}
	if Percent(0.9996) != "99.9%" || Percent(1) != "100.0%" {
		t.Errorf("Percent rounds a share below 100%% up: %s", Percent(0.9996))
	}
}
