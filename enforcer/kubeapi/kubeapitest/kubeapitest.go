// Package kubeapitest serves the Kubernetes NetworkPolicy list API over TLS
// for tests, the way the API server pages it, with a kubeconfig to reach it;
// and Cilium's policy lists (cilium.io/v2) once SetCilium installs them,
// Istio's AuthorizationPolicy list (security.istio.io/v1) once SetIstio
// does (before: 404, as an API server without those CRDs answers).
package kubeapitest

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/enforcer"
)

// Token is the bearer token the kubeconfig carries.
const Token = "kubeapitest-token"

// Server is a fake API server holding a fixed set of NetworkPolicies.
type Server struct {
	// Kubeconfig is the path of a kubeconfig that reaches the server.
	Kubeconfig string
	URL        string

	policies []networkingv1.NetworkPolicy
	page     int
	mu       sync.Mutex
	requests []string
	auth     []string
	// cilium holds the items of each installed Cilium (or Istio)
	// resource, by path.
	cilium    map[string][]json.RawMessage
	forbidden map[string]bool
}

// Paths of the Cilium policy lists across namespaces.
const (
	CNPPath  = "/apis/cilium.io/v2/ciliumnetworkpolicies"
	CCNPPath = "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies"
	// AuthzPath is the path of Istio's AuthorizationPolicy list.
	AuthzPath = "/apis/security.istio.io/v1/authorizationpolicies"
)

// SetIstio installs Istio's AuthorizationPolicy CRD, serving policies
// (objects as the API server holds them) from now on.
func (s *Server) SetIstio(t testing.TB, policies ...any) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cilium == nil {
		s.cilium = map[string][]json.RawMessage{}
	}
	s.cilium[AuthzPath] = []json.RawMessage{}
	for _, p := range policies {
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		s.cilium[AuthzPath] = append(s.cilium[AuthzPath], raw)
	}
}

// SetCilium installs Cilium's two policy CRDs, serving policies (each in
// the list of its kind) from now on.
func (s *Server) SetCilium(t testing.TB, policies []enforcer.CiliumNetworkPolicy) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cilium == nil {
		s.cilium = map[string][]json.RawMessage{}
	}
	s.cilium[CNPPath], s.cilium[CCNPPath] = []json.RawMessage{}, []json.RawMessage{}
	for _, p := range policies {
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		path := CNPPath
		if p.Clusterwide() {
			path = CCNPPath
		}
		s.cilium[path] = append(s.cilium[path], raw)
	}
}

// Forbid answers the list at path with 403 Forbidden, as the API server
// does when no RBAC rule grants it.
func (s *Server) Forbid(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forbidden == nil {
		s.forbidden = map[string]bool{}
	}
	s.forbidden[path] = true
}

// Start serves policies, page items per list response (continue tokens
// for the rest), until the test ends.
func Start(t testing.TB, policies []networkingv1.NetworkPolicy, page int) *Server {
	t.Helper()
	s := &Server{policies: policies, page: page}
	srv := httptest.NewTLSServer(s)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: ` + srv.URL + `
    certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca) + `
users:
- name: flowwarden
  user:
    token: ` + Token + `
contexts:
- name: test
  context: {cluster: test, user: flowwarden}
current-context: test
`
	s.Kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// Requests returns "METHOD path?query" of every request so far, and the
// Authorization header each carried.
func (s *Server) Requests() (requests, auth []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...), append([]string(nil), s.auth...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	start, _ := strconv.Atoi(r.URL.Query().Get("continue"))
	items, cilium := s.cilium[r.URL.Path]
	switch {
	case r.Method == http.MethodGet && s.forbidden[r.URL.Path]:
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"` + r.URL.Path + ` is forbidden: User \"system:serviceaccount:flowwarden:flowwarden\" cannot list resource","reason":"Forbidden","code":403}`))
		return
	case r.Method == http.MethodGet && cilium:
		start = min(max(start, 0), len(items))
		end := min(start+s.page, len(items))
		list := map[string]any{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicyList", "metadata": map[string]any{}, "items": items[start:end]}
		switch r.URL.Path {
		case CCNPPath:
			list["kind"] = "CiliumClusterwideNetworkPolicyList"
		case AuthzPath:
			list["apiVersion"], list["kind"] = "security.istio.io/v1", "AuthorizationPolicyList"
		}
		if end < len(items) {
			list["metadata"] = map[string]any{"continue": strconv.Itoa(end)}
		}
		_ = json.NewEncoder(w).Encode(list)
		return
	case r.Method != http.MethodGet || r.URL.Path != "/apis/networking.k8s.io/v1/networkpolicies":
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
		return
	}
	start = min(max(start, 0), len(s.policies))
	end := min(start+s.page, len(s.policies))
	list := networkingv1.NetworkPolicyList{Items: s.policies[start:end]}
	list.APIVersion, list.Kind = "networking.k8s.io/v1", "NetworkPolicyList"
	if end < len(s.policies) {
		list.Continue = strconv.Itoa(end)
	}
	_ = json.NewEncoder(w).Encode(list)
}
