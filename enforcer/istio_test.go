package enforcer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	secv1 "istio.io/client-go/pkg/apis/security/v1"
	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/schema"
)

// decodeStrictly decodes y into the Istio client-go type out and encodes
// it back: nothing may be lost or changed on the way (an unknown or
// misspelt field would be).
func decodeStrictly(t *testing.T, y []byte, out any) {
	t.Helper()
	if err := decodeStrictlyErr(y, out); err != nil {
		t.Fatal(err)
	}
}

func decodeStrictlyErr(y []byte, out any) error {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(j)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%T refuses it: %w\n%s", out, err, y)
	}
	back, err := json.Marshal(out)
	if err != nil {
		return err
	}
	var a, b map[string]any
	_ = json.Unmarshal(j, &a)
	_ = json.Unmarshal(back, &b)
	if md, ok := b["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if st, ok := b["status"].(map[string]any); ok && len(st) == 0 {
		delete(b, "status")
	}
	// ALLOW is the enum's zero value, which protobuf's JSON leaves out.
	if spec, ok := b["spec"].(map[string]any); ok && spec["action"] == nil && a["kind"] == "AuthorizationPolicy" {
		spec["action"] = "ALLOW"
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("%T changed it:\n%s\n---\n%s", out, j, back)
	}
	return nil
}

// The strict decoding can fail: a misspelt field, a bad enum.
func TestIstioDecodingIsStrict(t *testing.T) {
	for _, y := range []string{
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  rules:\n  - from:\n    - source: {principal: [a]}\n",
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  action: ALOW\n",
	} {
		if err := decodeStrictlyErr([]byte(y), &secv1.AuthorizationPolicy{}); err == nil {
			t.Errorf("accepted:\n%s", y)
		}
	}
}

type ipEnricher map[netip.Addr]schema.Endpoint

func (e ipEnricher) Enrich(f *schema.Flow) {
	if ep, ok := e[f.SrcIP]; ok && f.Src.Workload == "" {
		f.Src = ep
	}
	if ep, ok := e[f.DstIP]; ok && f.Dst.Workload == "" {
		f.Dst = ep
	}
}

func pod(ns, workload, sa string) schema.Endpoint {
	return schema.Endpoint{Namespace: ns, Pod: workload + "-5f9c8d7b6-x2x4q", Workload: workload, WorkloadKind: "Deployment",
		Labels: map[string]string{"app": workload, "io.kubernetes.pod.namespace": ns, "io.cilium.k8s.policy.serviceaccount": sa,
			"pod-template-hash": "5f9c8d7b6"}}
}

// istioCheck generates, proves, decodes strictly, and returns the policies.
func istioCheck(t *testing.T, obs *IstioObservations) []AuthorizationPolicy {
	t.Helper()
	aps, skipped := obs.IstioPolicies(DefaultL7Config(), DefaultConfig().NamePrefix, nil)
	if len(skipped) > 0 {
		t.Fatalf("skipped %v", skipped)
	}
	if bad := obs.ProveIstio(aps, nil); len(bad) > 0 {
		t.Fatalf("proof failed:\n%s", strings.Join(bad, "\n"))
	}
	for _, ap := range aps {
		y, err := MarshalIstio(ap)
		if err != nil {
			t.Fatal(err)
		}
		decodeStrictly(t, y, &secv1.AuthorizationPolicy{})
	}
	for _, r := range obs.Readiness(nil) {
		if r.Ready() {
			y, _ := MarshalIstio(StrictPeerAuthentication(r.Namespace))
			decodeStrictly(t, y, &secv1.PeerAuthentication{})
		}
	}
	return aps
}

// The published Istio access-log lines (JSON and text): the inbound request
// of sleep to httpbin, with mTLS, becomes a principal rule that allows it
// and denies other methods, paths, callers and ports.
func TestIstioOnPublishedEnvoyLines(t *testing.T) {
	enrich := ipEnricher{
		netip.MustParseAddr("10.44.1.27"): pod("foo", "httpbin", "httpbin"),
		netip.MustParseAddr("10.44.1.23"): pod("foo", "sleep", "sleep"),
	}
	for _, file := range []string{"istio-json-accesslog-official-docs-transcribed.jsonl", "istio-text-accesslog-official-docs.log"} {
		t.Run(file, func(t *testing.T) {
			obs := NewIstioObservations("")
			sink := ingest.SinkFunc(func(_ context.Context, flows ...schema.Flow) error {
				for i := range flows {
					obs.Add(&flows[i])
				}
				return nil
			})
			var stats ingest.Stats
			if err := envoy.ReadFile(context.Background(), "../testdata/istio-envoy/"+file, ingest.Enrich(enrich, sink), &stats); err != nil {
				t.Fatal(err)
			}
			if len(obs.Requests) != 1 {
				t.Fatalf("inbound requests: %v", obs.Requests)
			}
			aps := istioCheck(t, obs)
			y, _ := MarshalIstio(aps[0])
			for _, s := range []string{"action: ALLOW", "- cluster.local/ns/foo/sa/sleep", "- \"80\"", "- GET", "- /status/418", "app: httpbin"} {
				if !strings.Contains(string(y), s) {
					t.Errorf("policy lacks %q:\n%s", s, y)
				}
			}
			if strings.Contains(string(y), "pod-template-hash") {
				t.Errorf("selector has a churning label:\n%s", y)
			}
			rd := obs.Readiness(nil)
			if len(rd) != 1 || !rd[0].Ready() || rd[0].Namespace != "foo" {
				t.Errorf("readiness %+v", rd)
			}
		})
	}
}

// A scenario with mTLS and plaintext callers: shop/web is called with mTLS
// by shop/frontend and pay/checkout, and in plaintext by legacy/batch (no
// sidecar) and a VM outside the cluster; pay/api only with mTLS.
func TestIstioScenarioMTLSAndPlaintext(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	web, api := pod("shop", "web", "web"), pod("pay", "api", "api")
	frontend, checkout, batch := pod("shop", "frontend", "frontend"), pod("pay", "checkout", "checkout"), pod("legacy", "batch", "default")
	ip := map[string]netip.Addr{"web": mustAddr("10.1.0.10"), "api": mustAddr("10.1.1.10"), "frontend": mustAddr("10.1.0.11"),
		"checkout": mustAddr("10.1.1.11"), "batch": mustAddr("10.1.2.5"), "vm": mustAddr("192.168.10.5")}
	obs := NewIstioObservations("")
	req := func(src schema.Endpoint, srcIP string, dst schema.Endpoint, dstIP string, port uint16, mtls bool, method, path string) {
		f := schema.Flow{Time: t0, Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded, Direction: schema.DirectionIngress,
			Protocol: "TCP", SrcIP: ip[srcIP], DstIP: ip[dstIP], SrcPort: 40000, DstPort: port, Src: src, Dst: dst,
			L7Type: "http", HTTPMethod: method, HTTPPath: path, MTLS: mtls}
		if mtls {
			f.SrcPrincipal = "spiffe://cluster.local/ns/" + src.Namespace + "/sa/" + src.Labels["io.cilium.k8s.policy.serviceaccount"]
		}
		obs.Add(&f)
	}
	for _, id := range []string{"1", "2", "3", "17"} {
		req(frontend, "frontend", web, "web", 8080, true, "GET", "/api/users/"+id+"?full=1")
	}
	req(frontend, "frontend", web, "web", 8080, true, "POST", "/api/cart")
	req(checkout, "checkout", web, "web", 8080, true, "GET", "/api/cart")
	req(batch, "batch", web, "web", 8080, false, "GET", "/export.csv")
	req(schema.Endpoint{}, "vm", web, "web", 9090, false, "GET", "/metrics")
	req(checkout, "checkout", api, "api", 8443, true, "POST", "/v1/charge")
	req(frontend, "frontend", api, "api", 8443, true, "GET", "/v1/health")

	aps := istioCheck(t, obs)
	if len(aps) != 2 {
		t.Fatalf("%d policies", len(aps))
	}
	var webAP AuthorizationPolicy
	for _, ap := range aps {
		if ap.Metadata["namespace"] == "shop" {
			webAP = ap
		}
	}
	y, _ := MarshalIstio(webAP)
	t.Logf("shop/web:\n%s", y)
	for _, s := range []string{"- cluster.local/ns/shop/sa/frontend", "- cluster.local/ns/pay/sa/checkout", "- /api/users/*", "ipBlocks:\n        - 192.168.10.5/32"} {
		if !strings.Contains(string(y), s) {
			t.Errorf("shop/web lacks %q", s)
		}
	}
	// The evaluator, request by request.
	webLabels := StableLabels(web.Labels)
	for _, c := range []struct {
		r  IstioRequest
		ok bool
	}{
		{IstioRequest{Principal: "cluster.local/ns/shop/sa/frontend", Namespace: "shop", Port: 8080, Method: "GET", Path: "/api/users/99"}, true},
		{IstioRequest{Principal: "cluster.local/ns/shop/sa/frontend", Namespace: "shop", Port: 8080, Method: "GET", Path: "/api/orders"}, false},
		{IstioRequest{Principal: "cluster.local/ns/shop/sa/frontend", Namespace: "shop", Port: 8080, Method: "DELETE", Path: "/api/cart"}, false},
		{IstioRequest{Principal: "cluster.local/ns/pay/sa/checkout", Namespace: "pay", Port: 8080, Method: "POST", Path: "/api/cart"}, false},
		{IstioRequest{Principal: "cluster.local/ns/shop/sa/frontend", Namespace: "shop", Port: 9090, Method: "GET", Path: "/metrics"}, false},
		{IstioRequest{SrcIP: ip["vm"], Port: 9090, Method: "GET", Path: "/metrics"}, true},
		{IstioRequest{SrcIP: mustAddr("192.168.10.6"), Port: 9090, Method: "GET", Path: "/metrics"}, false},
		{IstioRequest{SrcIP: ip["batch"], Port: 8080, Method: "GET", Path: "/export.csv"}, true},
		{IstioRequest{SrcIP: ip["batch"], Port: 8080, Method: "GET", Path: "/api/cart"}, false},
	} {
		if ok, why := IstioAllows(aps, "shop", webLabels, c.r); ok != c.ok {
			t.Errorf("%+v: allowed %v (%s), want %v", c.r, ok, why, c.ok)
		}
	}
	// A workload no ALLOW policy selects: everything is allowed.
	if ok, _ := IstioAllows(aps, "shop", map[string]string{"app": "other"}, IstioRequest{Method: "DELETE", Path: "/x", Port: 1}); !ok {
		t.Error("a workload no policy selects was denied")
	}

	// STRICT readiness names exactly the plaintext callers.
	rd := obs.Readiness(nil)
	if len(rd) != 2 || rd[0].Namespace != "pay" || !rd[0].Ready() || rd[1].Namespace != "shop" || rd[1].Ready() {
		t.Fatalf("readiness %+v", rd)
	}
	var callers []string
	for c := range rd[1].Plaintext {
		callers = append(callers, c)
	}
	slices.Sort(callers)
	if !slices.Equal(callers, []string{"192.168.10.5", "legacy/batch"}) {
		t.Errorf("plaintext callers of shop: %q", callers)
	}
}

func TestIstioPaths(t *testing.T) {
	got := IstioPaths([]string{"/api/users/1", "/api/users/2", "/api/users/3", "/api/cart", "/", "/a/"}, 3)
	if want := []string{"/", "/a/", "/api/cart", "/api/users/*"}; !slices.Equal(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
	for _, c := range []struct {
		pat, path string
		ok        bool
	}{{"/api/users/*", "/api/users/7", true}, {"/api/users/*", "/api/user", false}, {"*.csv", "/export.csv", true}, {"*", "/x", true}, {"/x", "/x/", false}} {
		if istioPathMatch(c.pat, c.path) != c.ok {
			t.Errorf("%q vs %q", c.pat, c.path)
		}
	}
}
