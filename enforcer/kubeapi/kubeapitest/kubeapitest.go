// Package kubeapitest serves the Kubernetes NetworkPolicy list API over TLS
// for tests, the way the API server pages it, with a kubeconfig to reach it.
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
	s.requests = append(s.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet || r.URL.Path != "/apis/networking.k8s.io/v1/networkpolicies" {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
		return
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("continue"))
	start = min(max(start, 0), len(s.policies))
	end := min(start+s.page, len(s.policies))
	list := networkingv1.NetworkPolicyList{Items: s.policies[start:end]}
	list.APIVersion, list.Kind = "networking.k8s.io/v1", "NetworkPolicyList"
	if end < len(s.policies) {
		list.Continue = strconv.Itoa(end)
	}
	_ = json.NewEncoder(w).Encode(list)
}
