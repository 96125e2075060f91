package analyze

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowwarden/flowwarden/schema"
)

// A namespace's mode in force: its own namespace-wide policy, else the
// mesh's, else none; UNSET and workload policies do not decide it; the
// flag's namespaces are STRICT.
func TestNamespaceMode(t *testing.T) {
	pas, err := ReadPeerAuthentications(filepath.Join(scenarioDir, "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	pas = append(pas, PeerAuthentication{Namespace: "legacy", Name: "unset", Mode: "UNSET"},
		PeerAuthentication{Namespace: "shop", Name: "api", Selector: map[string]string{"app": "api"}, Mode: "STRICT"})
	p := NewMTLSPolicy(pas, "istio-system", []string{"vault"})
	for ns, want := range map[string]string{"payments": "STRICT payments/default", "shop": "PERMISSIVE istio-system/default",
		"legacy": "PERMISSIVE istio-system/default", "vault": "STRICT --strict-mtls-namespace"} {
		if m, from := p.NamespaceMode(ns); m+" "+from != want {
			t.Errorf("%s: %s %s, want %s", ns, m, from, want)
		}
	}
	if m, from := NewMTLSPolicy(nil, "istio-system", nil).NamespaceMode("shop"); m != "none" || from != "" {
		t.Errorf("no policies: %s %s, want none", m, from)
	}
}

// MeshReport over groups of like flows counts what MTLSCoverageOf counts
// over the flows one by one, and the plaintext receivers sum to the
// plaintext requests, most first, cut to the top few but counted.
func TestMeshReportGroupsAsFlows(t *testing.T) {
	flows := breachFlows(t, "plaintext-in-mesh")
	type key struct {
		ns, wl string
		port   uint16
		mtls   bool
		src    schema.SourceKind
		dir    schema.Direction
	}
	groups := map[key]uint64{}
	rep := map[key]*schema.Flow{}
	for i := range flows {
		f := &flows[i]
		k := key{f.Dst.Namespace, f.Dst.Workload, f.DstPort, f.MTLS, f.Source, f.Direction}
		groups[k]++
		rep[k] = f
	}
	var r MeshReport
	for k, n := range groups {
		r.AddGroup(rep[k], n)
	}
	pas, err := ReadPeerAuthentications(filepath.Join(scenarioDir, "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	got := r.Namespaces(NewMTLSPolicy(pas, "istio-system", nil), 1)
	want := MTLSCoverageOf(flows)
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d namespaces, want %d", len(got), len(want))
	}
	var all MeshReport
	for j := range flows {
		all.Add(&flows[j])
	}
	fulls := all.Namespaces(nil, 0)
	for i := range want {
		if fmt.Sprint(got[i].NamespaceCoverage) != fmt.Sprint(want[i]) {
			t.Errorf("grouped %+v, MTLSCoverageOf %+v", got[i].NamespaceCoverage, want[i])
		}
		full := fulls[i]
		var plain uint64
		for _, p := range full.Plaintext {
			plain += p.Requests
		}
		if plain != want[i].Total-want[i].Secured || full.PlaintextReceivers != len(full.Plaintext) {
			t.Errorf("%s: plaintext receivers sum to %d, want %d", want[i].Namespace, plain, want[i].Total-want[i].Secured)
		}
		if len(got[i].Plaintext) > 1 || got[i].PlaintextReceivers != full.PlaintextReceivers ||
			len(full.Plaintext) > 0 && got[i].Plaintext[0] != (schema.PlaintextReceiver{Workload: full.Plaintext[0].Workload, Port: full.Plaintext[0].Port,
				Requests: full.Plaintext[0].Requests, Mode: got[i].Plaintext[0].Mode}) {
			t.Errorf("%s: top 1 %+v of %d, all %+v", want[i].Namespace, got[i].Plaintext, got[i].PlaintextReceivers, full.Plaintext)
		}
	}
}

// ReadPeerAuthentications skips what is not a Kubernetes object, such as
// recommend's flowwarden-left-out.json next to the policies.
func TestReadPeerAuthenticationsSkipsLists(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flowwarden-left-out.json"), []byte(`[{"from":"a"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pa.yaml"), []byte("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pas, err := ReadPeerAuthentications(dir)
	if err != nil || len(pas) != 1 || pas[0].Mode != "STRICT" {
		t.Errorf("read %+v, %v", pas, err)
	}
}
