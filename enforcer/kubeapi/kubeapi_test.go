package kubeapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
)

// TestListPoliciesReadsEveryPage lists the policies of two published sets
// through a kubeconfig, three per page, and gets what the files hold.
func TestListPoliciesReadsEveryPage(t *testing.T) {
	var want []networkingv1.NetworkPolicy
	for _, dir := range []string{"../../testdata/netpol/current", "../../testdata/golden"} {
		nps, err := enforcer.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, nps...)
	}
	api := kubeapitest.Start(t, want, 3)
	t.Setenv("KUBECONFIG", "/nonexistent") // the explicit file wins
	cfg, err := kubeapi.Config(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kubeapi.ListPolicies(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 4 || !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %d policies, want the %d of the files", len(got), len(want))
	}
	requests, auth := api.Requests()
	if pages := (len(want) + 2) / 3; len(requests) != pages {
		t.Errorf("%d requests for %d pages: %v", len(requests), pages, requests)
	}
	for i, a := range auth {
		if a != "Bearer "+kubeapitest.Token || !strings.HasPrefix(requests[i], "GET /apis/networking.k8s.io/v1/networkpolicies?") {
			t.Errorf("request %d: %s authorised as %q", i, requests[i], a)
		}
	}
}

func TestListPoliciesReportsTheServer(t *testing.T) {
	api := kubeapitest.Start(t, nil, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"networkpolicies.networking.k8s.io is forbidden: User \"system:serviceaccount:flowwarden:flowwarden\" cannot list resource","reason":"Forbidden","code":403}`))
	}))
	defer srv.Close()
	cfg, err := kubeapi.Config(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = srv.URL
	cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.Insecure = nil, true
	_, err = kubeapi.ListPolicies(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "list NetworkPolicies from "+srv.URL) || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("a forbidden list: %v", err)
	}
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := kubeapi.Config(""); err == nil || !strings.Contains(err.Error(), "no configuration") {
		t.Errorf("no kubeconfig and not in a pod: %v", err)
	}
}
