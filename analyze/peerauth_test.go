package analyze

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// Istio's resolution: the workload's policy (its port first), UNSET
// inherits the namespace's, then the mesh's; nothing is PERMISSIVE; the
// flag's namespaces are strict whatever the policies say.
func TestMTLSPolicyResolution(t *testing.T) {
	pas, err := ReadPeerAuthentications(filepath.Join(scenarioDir, "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pas) != 3 {
		t.Fatalf("read %d PeerAuthentications, want 3: %+v", len(pas), pas)
	}
	pas = append(pas, PeerAuthentication{Namespace: "legacy", Name: "off", Mode: "DISABLE"},
		PeerAuthentication{Namespace: "legacy", Name: "api", Selector: map[string]string{"app": "api"}, Mode: "STRICT"})
	p := NewMTLSPolicy(pas, "istio-system", []string{"vault"})
	for _, c := range []struct {
		ns     string
		labels map[string]string
		port   uint16
		mode   string
		strict bool
	}{
		{"payments", map[string]string{"app": "ledger"}, 8080, "STRICT", true},    // workload UNSET → namespace STRICT
		{"payments", map[string]string{"app": "ledger"}, 9901, "DISABLE", false},  // port level
		{"payments", map[string]string{"app": "other"}, 9901, "STRICT", true},     // the port rule is the ledger's only
		{"shop", map[string]string{"app": "frontend"}, 8080, "PERMISSIVE", false}, // mesh-wide
		{"legacy", map[string]string{"app": "web"}, 80, "DISABLE", false},         // namespace
		{"legacy", map[string]string{"app": "api"}, 80, "STRICT", true},           // workload over namespace
		{"vault", map[string]string{"app": "vault"}, 8200, "PERMISSIVE", true},    // the flag
		{"nowhere", nil, 80, "PERMISSIVE", false},
	} {
		if m := p.Mode(c.ns, c.labels, c.port); m != c.mode || p.Strict(c.ns, c.labels, c.port) != c.strict {
			t.Errorf("%s %v :%d: mode %s strict %v, want %s %v", c.ns, c.labels, c.port, m, p.Strict(c.ns, c.labels, c.port), c.mode, c.strict)
		}
	}
	if NewMTLSPolicy(nil, "istio-system", nil).Strict("payments", nil, 80) {
		t.Error("no policies and no flag: strict")
	}
}

func TestReadPeerAuthenticationsRefusesBadModes(t *testing.T) {
	dir := t.TempDir()
	bad := "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: a}\nspec: {mtls: {mode: STRICTEST}}\n"
	if err := os.WriteFile(filepath.Join(dir, "pa.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPeerAuthentications(dir); err == nil || !strings.Contains(err.Error(), `unknown mTLS mode "STRICTEST"`) || !strings.Contains(err.Error(), "pa.yaml") {
		t.Errorf("a bad mode: %v", err)
	}
	port := "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: a}\nspec: {portLevelMtls: {http: {mode: DISABLE}}}\n"
	if err := os.WriteFile(filepath.Join(dir, "pa.yaml"), []byte(port), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPeerAuthentications(dir); err == nil || !strings.Contains(err.Error(), "not a port number") {
		t.Errorf("a named port: %v", err)
	}
}

// From the cluster: listed through client-go's dynamic client, page by page.
func TestListPeerAuthentications(t *testing.T) {
	gvr := k8sschema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	obj := func(ns, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
			"metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec}}
	}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[k8sschema.GroupVersionResource]string{gvr: "PeerAuthenticationList"},
		obj("payments", "default", map[string]any{"mtls": map[string]any{"mode": "STRICT"}}),
		obj("payments", "ledger", map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "ledger"}},
			"portLevelMtls": map[string]any{"9901": map[string]any{"mode": "DISABLE"}}}))
	pas, err := ListPeerAuthentications(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	p := NewMTLSPolicy(pas, "istio-system", nil)
	if len(pas) != 2 || !p.Strict("payments", map[string]string{"app": "ledger"}, 8080) || p.Strict("payments", map[string]string{"app": "ledger"}, 9901) {
		t.Errorf("listed %+v", pas)
	}
}

// A PeerAuthentication set to STRICT while serve runs applies from then on.
func TestSetPeerAuthentications(t *testing.T) {
	var c Collector
	e, err := NewEngine(DefaultConfig(), &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := newBreachGen(3)
	g.envoy(breachStart, g.debug, g.ledger, 8080, false, "/")
	_ = e.Write(t.Context(), g.out...)
	if len(c.Findings()) != 0 {
		t.Fatalf("no policy in force, yet %+v", c.Findings())
	}
	e.SetPeerAuthentications([]PeerAuthentication{{Namespace: "payments", Name: "default", Mode: "STRICT"}})
	g.out = g.out[:0]
	g.envoy(breachStart.Add(time.Second), g.debug, g.ledger, 8080, false, "/")
	_ = e.Write(t.Context(), g.out...)
	if f := c.Findings(); len(f) != 1 || f[0].Detector != DetectorPlaintextInMesh || f[0].Workload != "ledger" {
		t.Fatalf("after payments turned STRICT: %+v", f)
	}
}
