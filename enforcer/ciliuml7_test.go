package enforcer

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/cilium/pkg/policy/api"
	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// readBackCilium reads the written Cilium policies back as verify reads
// their files.
func readBackCilium(t *testing.T, cps []CiliumPolicy) L7Policies {
	t.Helper()
	var set L7Policies
	for _, cp := range cps {
		y, err := MarshalCilium(cp)
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseL7Policies(y, &set); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// ciliumL7 runs recommend --flavor cilium --l7 on flows, and checks every
// policy with Cilium's own sanitiser.
func ciliumL7(t *testing.T, flows []schema.Flow, l7 L7Config) ([]CiliumPolicy, []L7Note, *Result) {
	t.Helper()
	cfg := DefaultConfig()
	g, res := generate(t, flows, cfg)
	obs := NewL7Observations()
	for i := range flows {
		obs.Add(&flows[i])
	}
	cps := ToCilium(res, g)
	notes := AddCiliumL7(cps, obs, l7, cfg.NamePrefix)
	for _, cp := range cps {
		y, err := MarshalCilium(cp)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal(y, &back); err != nil {
			t.Fatal(err)
		}
		var rule api.Rule
		dec := json.NewDecoder(strings.NewReader(string(back.Spec)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rule); err != nil {
			t.Fatalf("%v: %v\n%s", cp.Metadata["name"], err, y)
		}
		if err := rule.Sanitize(); err != nil {
			t.Errorf("%v/%v fails Cilium's Sanitize: %v\n%s", cp.Metadata["namespace"], cp.Metadata["name"], err, y)
		}
	}
	return cps, notes, res
}

// httpRulesFor is the HTTP rules a policy's egress (or ingress) rules hold
// for a port, and whether the port is in any rule.
func httpRulesFor(cp CiliumPolicy, ingress bool, proto string, port uint16) ([]HTTPRule, bool) {
	prs := ciliumPortRules(cp, ingress)
	var rules []HTTPRule
	found := false
	for _, pr := range prs {
		for _, pp := range pr.Ports {
			if pp.Protocol == proto && pp.Port == strconv.Itoa(int(port)) {
				found = true
				if pr.Rules != nil {
					rules = append(rules, pr.Rules.HTTP...)
				}
			}
		}
	}
	return rules, found
}

// TestCiliumL7OnPublishedHTTPFlows: on the published 348 HTTP flows, every
// observed request matches an HTTP rule on its port (by Cilium's
// semantics), DELETE /admin matches none, and every rule passes Sanitize.
func TestCiliumL7OnPublishedHTTPFlows(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	cps, notes, res := ciliumL7(t, flows, DefaultL7Config())
	leftOut := map[Edge]bool{}
	for _, s := range res.Skipped {
		leftOut[s.Edge] = true
	}
	byWorkload := map[string]CiliumPolicy{}
	for _, cp := range cps {
		byWorkload[cp.Metadata["namespace"].(string)+"/"+strings.TrimPrefix(cp.Metadata["name"].(string), DefaultConfig().NamePrefix)] = cp
	}
	requests := 0
	ports := map[string]bool{}
	for _, f := range flows {
		if f.L7Type != "http" || !Counts(&f) || FlowOpener(&f) != OpenedBySource {
			continue
		}
		e, why := EdgeOf(&f)
		if why != "" || e.From.Kind != PeerWorkload {
			continue
		}
		cp, ok := byWorkload[e.From.Workload]
		if !ok {
			t.Fatalf("no policy for %s", e.From.Workload)
		}
		rules, found := httpRulesFor(cp, false, e.Protocol, e.Port)
		if !found && leftOut[e] {
			continue // recommend left it out on purpose (a guardrail)
		}
		if !found || len(rules) == 0 {
			t.Fatalf("%s egress %s/%d has no HTTP rules (found %v); notes %v", e.From.Workload, e.Protocol, e.Port, found, notes)
		}
		requests++
		ports[e.From.Workload+" "+strconv.Itoa(int(e.Port))] = true
		if ok, err := CiliumHTTPAllows(rules, f.HTTPMethod, f.HTTPPath); err != nil || !ok {
			t.Errorf("%s %s %s to port %d: not allowed by %v (%v)", e.From.Workload, f.HTTPMethod, f.HTTPPath, e.Port, rules, err)
		}
		for _, probe := range [][2]string{{"DELETE", "/admin"}, {"GET", "/admin"}, {"DELETE", f.HTTPPath}, {"GET", f.HTTPPath + "/x"}, {"GET", "/metricsX"}} {
			if ok, _ := CiliumHTTPAllows(rules, probe[0], probe[1]); ok {
				t.Errorf("%s port %d allows the unobserved %s %s", e.From.Workload, e.Port, probe[0], probe[1])
			}
		}
	}
	if requests < 100 || len(ports) < 6 {
		t.Errorf("checked %d requests on %d ports", requests, len(ports))
	}
	t.Logf("%d observed requests on %d workload ports each matched a rule; notes: %v", requests, len(ports), notes)
}

func TestPathRegexes(t *testing.T) {
	got := PathRegexes([]string{"/api/users/123", "/api/users/456", "/api/users/789", "/metrics", "/productpage", "/a.b/c+d", "/api/users/123"}, 3)
	want := []string{`^/a\.b/c\+d$`, `^/api/users/[^/]+$`, `^/metrics$`, `^/productpage$`}
	if !slices.Equal(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
	// Below the threshold: each path exactly; the first segment never varies.
	if got := PathRegexes([]string{"/api/users/123", "/api/users/456"}, 3); !slices.Equal(got, []string{`^/api/users/123$`, `^/api/users/456$`}) {
		t.Errorf("below threshold: %q", got)
	}
	if got := PathRegexes([]string{"/a", "/b", "/c"}, 2); len(got) != 3 {
		t.Errorf("first segment generalised: %q", got)
	}
	rules := []HTTPRule{{Method: "^GET$", Path: `^/api/users/[^/]+$`}}
	for _, c := range []struct {
		m, p string
		ok   bool
	}{{"GET", "/api/users/42", true}, {"GET", "/api/users/42?x=1", true}, {"GET", "/api/users/42/delete", false}, {"POST", "/api/users/42", false}, {"GET", "/api/users/", false}, {"GETX", "/api/users/1", false}} {
		if ok, err := CiliumHTTPAllows(rules, c.m, c.p); err != nil || ok != c.ok {
			t.Errorf("%s %s: %v %v, want %v", c.m, c.p, ok, err, c.ok)
		}
	}
}

// A port where one peer's traffic was L4 only stays L4, and says why.
func TestCiliumL7LeavesMixedPortsL4(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	var l4 schema.Flow
	for _, f := range flows {
		if f.L7Type == "http" && !f.IsReply && f.DstPort == 9080 {
			l4 = f
			break
		}
	}
	l4.L7Type, l4.HTTPMethod, l4.HTTPPath = "", "", ""
	l4.SrcIP = mustAddr("10.156.9.9")
	l4.Src = schema.Endpoint{Namespace: l4.Dst.Namespace, Pod: "details-v1-1-abcde", Workload: "details-v1", WorkloadKind: "Deployment",
		Labels: map[string]string{"app": "details", "io.kubernetes.pod.namespace": l4.Dst.Namespace}, Identity: 4243}
	flows = append(flows, l4)
	_, notes, _ := ciliumL7(t, flows, DefaultL7Config())
	saw := false
	for _, n := range notes {
		if n.Port == 9080 && n.Ingress && n.L7 == "" && strings.Contains(n.Reason, "not seen as HTTP") {
			saw = true
		}
	}
	if !saw {
		t.Errorf("no L4 note for the mixed port: %v", notes)
	}
}

// DNS egress gets matchPattern rules naming the names looked up.
func TestCiliumL7DNS(t *testing.T) {
	flows, err := hubble.ReadFlows(context.Background(), "../testdata/hubble/basic-sample-330-dns-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	// The published lookups are kube-system's own, which recommend leaves
	// alone; make a tenant workload do them.
	var tenant []schema.Flow
	for _, f := range flows {
		if f.L7Type == "dns" && !f.IsReply {
			f.Src = schema.Endpoint{Namespace: "shop", Pod: "web-7d9f-abcde", Workload: "web", WorkloadKind: "Deployment",
				Labels: map[string]string{"app": "web", "io.kubernetes.pod.namespace": "shop"}, Identity: 4242}
			tenant = append(tenant, f)
		}
	}
	flows = tenant
	cps, notes, _ := ciliumL7(t, flows, DefaultL7Config())
	queried := map[string]bool{}
	for _, f := range flows {
		if f.L7Type == "dns" && f.DNSQuery != "" && !f.IsReply {
			queried[strings.ToLower(strings.TrimSuffix(f.DNSQuery, "."))] = true
		}
	}
	patterns := map[string]bool{}
	for _, cp := range cps {
		for _, r := range cp.Spec.Egress {
			for _, pr := range r.ToPorts {
				if pr.Rules != nil {
					for _, d := range pr.Rules.DNS {
						patterns[d.MatchPattern] = true
					}
				}
			}
		}
	}
	dnsNotes := 0
	for _, n := range notes {
		if n.L7 == "dns" {
			dnsNotes++
		}
	}
	if dnsNotes == 0 || len(queried) == 0 {
		t.Fatalf("no DNS rules (%d names queried): %v", len(queried), notes)
	}
	// No policy of the namespace keeps "*": the namespace-wide default
	// deny names the namespace's lookups (Cilium merges DNS rules).
	if patterns["*"] {
		t.Errorf("a DNS rule still allows every name: %v", notes)
	}
	for q := range queried {
		if !patterns[q] {
			t.Errorf("queried %q has no matchPattern (patterns %v)", q, patterns)
		}
	}
}
