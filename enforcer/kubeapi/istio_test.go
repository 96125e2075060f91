package kubeapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
)

func authz(ns, name, action string, status map[string]any) map[string]any {
	o := map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": name, "namespace": ns, "uid": "u-" + name, "resourceVersion": "7"},
		"spec": map[string]any{
			"action":   action,
			"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"rules":    []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}, "paths": []any{"/" + name}}}}}},
		},
	}
	if status != nil {
		o["status"] = status
	}
	return o
}

func dynamicClient(t *testing.T, api *kubeapitest.Server) dynamic.Interface {
	t.Helper()
	cfg, err := kubeapi.Config(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// TestListAuthorizationPolicies lists four AuthorizationPolicies, two a
// page: the ALLOW ones are read as a file's are (the status Istio keeps
// is no reason to skip one), sorted by namespace/name; the DENY one and
// the one with a condition (when) are named as not judged.
func TestListAuthorizationPolicies(t *testing.T) {
	when := authz("shop", "when", "ALLOW", nil)
	when["spec"].(map[string]any)["rules"].([]any)[0].(map[string]any)["when"] = []any{map[string]any{"key": "request.headers[x]", "values": []any{"1"}}}
	api := kubeapitest.Start(t, nil, 2)
	api.SetIstio(t,
		authz("shop", "web", "ALLOW", map[string]any{"validationMessages": []any{}}),
		authz("alpha", "api", "", nil),
		authz("shop", "deny", "DENY", nil),
		when)
	var set enforcer.L7Policies
	missing, err := kubeapi.ListAuthorizationPolicies(context.Background(), dynamicClient(t, api), &set)
	if err != nil || missing {
		t.Fatalf("missing %v: %v", missing, err)
	}
	if len(set.Istio) != 2 || set.Istio[0].Metadata["name"] != "api" || set.Istio[1].Metadata["name"] != "web" ||
		set.Istio[1].Spec.Rules[0].To[0].Operation.Paths[0] != "/web" || set.Istio[1].Spec.Selector.MatchLabels["app"] != "web" {
		t.Errorf("listed: %+v", set.Istio)
	}
	if len(set.Unsupported) != 2 || set.Unsupported[0] != "AuthorizationPolicy shop/deny: action DENY" ||
		!strings.HasPrefix(set.Unsupported[1], "AuthorizationPolicy shop/when: an AuthorizationPolicy with fields flowwarden does not judge") {
		t.Errorf("not judged: %q", set.Unsupported)
	}
	if requests, _ := api.Requests(); len(requests) != 2 || !strings.HasPrefix(requests[1], "GET "+kubeapitest.AuthzPath+"?") {
		t.Errorf("requests: %v", requests)
	}
}

// Without Istio's CRD (404) nothing is listed and nothing fails;
// Forbidden is an error naming the RBAC rule.
func TestListAuthorizationPoliciesErrors(t *testing.T) {
	api := kubeapitest.Start(t, nil, 2)
	var set enforcer.L7Policies
	missing, err := kubeapi.ListAuthorizationPolicies(context.Background(), dynamicClient(t, api), &set)
	if err != nil || !missing || !set.Empty() {
		t.Errorf("no CRD: missing %v, %+v, %v", missing, set, err)
	}
	api.SetIstio(t, authz("shop", "web", "ALLOW", nil))
	api.Forbid(kubeapitest.AuthzPath)
	_, err = kubeapi.ListAuthorizationPolicies(context.Background(), dynamicClient(t, api), &set)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "list authorizationpolicies.security.istio.io: forbidden") ||
		!strings.Contains(err.Error(), kubeapi.IstioRBACRule) {
		t.Errorf("forbidden: %v", err)
	}
}

// ListCiliumPoliciesL7 reads the HTTP rules of the CiliumNetworkPolicies
// it lists, from the same listing, as a file's are read.
func TestListCiliumPoliciesL7(t *testing.T) {
	const doc = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: details, namespace: bookinfo}
spec:
  endpointSelector: {matchLabels: {"k8s:app": details}}
  ingress:
  - fromEndpoints: [{matchLabels: {"k8s:app": productpage}}]
    toPorts:
    - ports: [{port: "9080", protocol: TCP}]
      rules:
        http: [{method: GET, path: "^/details/.*$"}]
`
	cps, err := enforcer.ParseCiliumPolicies([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var want enforcer.L7Policies
	if err := enforcer.ParseL7Policies([]byte(doc), &want); err != nil || want.Empty() {
		t.Fatalf("%+v: %v", want, err)
	}
	api := kubeapitest.Start(t, nil, 2)
	api.SetCilium(t, cps)
	var got enforcer.L7Policies
	listed, _, err := kubeapi.ListCiliumPoliciesL7(context.Background(), dynamicClient(t, api), &got)
	if err != nil || len(listed) != 1 || len(got.Cilium) != 1 || got.Empty() {
		t.Fatalf("%d policies, L7 %+v: %v", len(listed), got, err)
	}
	g, _ := json.Marshal(got.Cilium[0].Spec)
	w, _ := json.Marshal(want.Cilium[0].Spec)
	if got.Cilium[0].Metadata["namespace"] != "bookinfo" || string(g) != string(w) || !strings.Contains(string(g), "^/details/.*$") {
		t.Errorf("from the cluster: %s\nfrom the file: %s", g, w)
	}
}
