package kubeapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
)

const ciliumYAML = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: details, namespace: bookinfo}
spec:
  endpointSelector: {matchLabels: {app: details}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: productpage}}]
    toPorts: [{ports: [{port: "9080", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ratings, namespace: bookinfo}
specs:
- endpointSelector: {matchLabels: {app: ratings}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: reviews}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api, namespace: alpha}
spec:
  endpointSelector: {}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-metadata}
spec:
  endpointSelector: {}
  egressDeny:
  - toCIDR: [169.254.169.254/32]
`

func ciliumPolicies(t *testing.T) []enforcer.CiliumNetworkPolicy {
	t.Helper()
	cps, err := enforcer.ParseCiliumPolicies([]byte(ciliumYAML))
	if err != nil || len(cps) != 4 {
		t.Fatalf("%d policies: %v", len(cps), err)
	}
	return cps
}

// keysAndSpecs renders what judging reads of each policy.
func keysAndSpecs(t *testing.T, cps []enforcer.CiliumNetworkPolicy) []string {
	t.Helper()
	var out []string
	for _, p := range cps {
		spec, err := json.Marshal([]any{p.Kind, p.Spec, p.Specs})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Key()+" "+string(spec))
	}
	return out
}

// TestListCiliumPoliciesReadsEveryPage lists both Cilium kinds from a
// fake API server through a kubeconfig, two per page: every policy comes
// back as the file says it, sorted by key as a directory's are.
func TestListCiliumPoliciesReadsEveryPage(t *testing.T) {
	want := ciliumPolicies(t)
	api := kubeapitest.Start(t, nil, 2)
	api.SetCilium(t, want)
	cfg, err := kubeapi.Config(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, missing, err := kubeapi.ListCiliumPolicies(context.Background(), client)
	if err != nil || len(missing) != 0 {
		t.Fatalf("missing %v: %v", missing, err)
	}
	g, w := keysAndSpecs(t, got), keysAndSpecs(t, want)
	if len(g) != 4 || g[0] != w[2] || g[1] != w[0] || g[2] != w[1] || g[3] != w[3] {
		t.Errorf("listed:\n%s\nwant (sorted by key):\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
	if !got[3].Clusterwide() || got[3].Namespace != "" || got[0].Namespace != "alpha" {
		t.Errorf("kinds or namespaces lost: %+v", got)
	}
	requests, _ := api.Requests()
	// 3 CiliumNetworkPolicies at 2 a page, 1 clusterwide policy.
	if len(requests) != 3 || !strings.HasPrefix(requests[0], "GET "+kubeapitest.CNPPath+"?") || !strings.HasPrefix(requests[2], "GET "+kubeapitest.CCNPPath+"?") {
		t.Errorf("requests: %v", requests)
	}
}

// fakeClient is client-go's fake dynamic client holding objs, with react
// answering every list of resource (when given).
func fakeClient(resource string, react k8stesting.ReactionFunc, objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[k8sschema.GroupVersionResource]string{
		kubeapi.CiliumNetworkPolicies:            "CiliumNetworkPolicyList",
		kubeapi.CiliumClusterwideNetworkPolicies: "CiliumClusterwideNetworkPolicyList",
	}, objs...)
	if react != nil {
		c.PrependReactor("list", resource, react)
	}
	return c
}

func cnp(ns, name string, spec map[string]any) *unstructured.Unstructured {
	kind := "CiliumNetworkPolicy"
	if ns == "" {
		kind = "CiliumClusterwideNetworkPolicy"
	}
	md := map[string]any{"name": name}
	if ns != "" {
		md["namespace"] = ns
	}
	o := map[string]any{"apiVersion": "cilium.io/v2", "kind": kind, "metadata": md}
	if spec != nil {
		o["spec"] = spec
	}
	return &unstructured.Unstructured{Object: o}
}

// Without Cilium's CRDs (the API server answers NotFound) nothing is
// listed and nothing fails: the missing resources are named. Forbidden is
// an error naming the RBAC rule; a policy the rule type cannot read is an
// error naming the policy.
func TestListCiliumPoliciesErrors(t *testing.T) {
	ctx := context.Background()
	notFound := func(gr k8sschema.GroupResource) k8stesting.ReactionFunc {
		return func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewNotFound(gr, "")
		}
	}
	both := fakeClient("ciliumnetworkpolicies", notFound(kubeapi.CiliumNetworkPolicies.GroupResource()))
	both.PrependReactor("list", "ciliumclusterwidenetworkpolicies", notFound(kubeapi.CiliumClusterwideNetworkPolicies.GroupResource()))
	got, missing, err := kubeapi.ListCiliumPolicies(ctx, both)
	if err != nil || len(got) != 0 || strings.Join(missing, ",") != "ciliumnetworkpolicies.cilium.io,ciliumclusterwidenetworkpolicies.cilium.io" {
		t.Errorf("no CRDs: %d policies, missing %v, %v", len(got), missing, err)
	}

	// Only the clusterwide kind missing: the namespaced ones still count.
	spec := map[string]any{"endpointSelector": map[string]any{}, "ingress": []any{map[string]any{}}}
	one := fakeClient("ciliumclusterwidenetworkpolicies", notFound(kubeapi.CiliumClusterwideNetworkPolicies.GroupResource()), cnp("shop", "open", spec))
	got, missing, err = kubeapi.ListCiliumPolicies(ctx, one)
	if err != nil || len(got) != 1 || got[0].Key() != "shop/open" || len(got[0].Spec.Ingress) != 1 || strings.Join(missing, ",") != "ciliumclusterwidenetworkpolicies.cilium.io" {
		t.Errorf("no CCNP CRD: %+v, missing %v, %v", got, missing, err)
	}

	forbidden := fakeClient("ciliumclusterwidenetworkpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(kubeapi.CiliumClusterwideNetworkPolicies.GroupResource(), "", nil)
	})
	_, _, err = kubeapi.ListCiliumPolicies(ctx, forbidden)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "list ciliumclusterwidenetworkpolicies.cilium.io: forbidden") ||
		!strings.Contains(err.Error(), kubeapi.CiliumRBACRule) || !strings.Contains(err.Error(), `verbs: ["list"]`) {
		t.Errorf("forbidden: %v", err)
	}

	for _, c := range []struct {
		obj  *unstructured.Unstructured
		want string
	}{
		{cnp("shop", "empty", nil), "CiliumNetworkPolicy shop/empty from the cluster: document 1: CiliumNetworkPolicy empty: neither spec nor specs"},
		{cnp("", "typo", map[string]any{"endpointSelector": map[string]any{}, "ingresss": []any{}}), `CiliumClusterwideNetworkPolicy typo from the cluster: document 1: CiliumClusterwideNetworkPolicy: error unmarshaling JSON: while decoding JSON: json: unknown field "ingresss"`},
	} {
		_, _, err := kubeapi.ListCiliumPolicies(ctx, fakeClient("", nil, c.obj))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.obj.GetName(), err, c.want)
		}
	}
}
