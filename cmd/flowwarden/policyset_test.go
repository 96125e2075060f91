package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
)

// TestVerifyCiliumPoliciesFromTheCluster: on a Cilium cluster, verify
// --policies cluster judges the CiliumNetworkPolicies in force too. With
// details-v1's ingress naming a caller nobody is (a typo), productpage's
// calls are regressions (exit 1), exactly as verify says of the same
// policies in a directory; the sound policies pass.
func TestVerifyCiliumPoliciesFromTheCluster(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-400-tcp-flows.json")
	if out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("recommend: %v\n%s", err, out)
	}
	sound, err := enforcer.LoadCiliumDir(dir)
	if err != nil || len(sound) != 9 {
		t.Fatalf("%d policies written: %v", len(sound), err)
	}
	api := kubeapitest.Start(t, nil, 4)
	api.SetCilium(t, sound)
	out, err := runIn(context.Background(), nil, "verify", "--policies", "cluster", "--kubeconfig", api.Kubeconfig, file, "--log-level", "warn")
	if err != nil || !strings.Contains(out, "9 policies; 243 flows checked; 0 would be denied") {
		t.Fatalf("verify of the sound policies from the cluster: %v\n%s", err, out)
	}

	p := filepath.Join(dir, "bookinfo", "details-v1.yaml")
	y, _ := os.ReadFile(p)
	broken := strings.Replace(string(y), "k8s:app: productpage", "k8s:app: productpag", 1)
	if broken == string(y) {
		t.Fatalf("details-v1.yaml does not name productpage:\n%s", y)
	}
	if err := os.WriteFile(p, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	cnps, err := enforcer.LoadCiliumDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	api = kubeapitest.Start(t, nil, 4)
	api.SetCilium(t, cnps)
	verify := func(spec string) string {
		t.Helper()
		out, err := runIn(context.Background(), nil, "verify", "--policies", spec, "--kubeconfig", api.Kubeconfig, file, "-o", "table", "--log-level", "warn")
		var ec exitCode
		if !errors.As(err, &ec) || ec != 1 {
			t.Fatalf("verify --policies %s of the broken policy: %v, want exit 1\n%s", spec, err, out)
		}
		return out
	}
	fromCluster, fromDir := verify("cluster"), verify(dir)
	if !strings.Contains(fromCluster, "bookinfo/productpage-v1") || !strings.Contains(fromCluster, "bookinfo/details-v1") ||
		!strings.Contains(fromCluster, "TCP/9080") || !strings.Contains(fromCluster, "forwarded when observed (regressions, on 1 edges)") {
		t.Errorf("verify --policies cluster:\n%s", fromCluster)
	}
	if fromCluster != fromDir {
		t.Errorf("from the cluster:\n%s\nfrom the directory:\n%s", fromCluster, fromDir)
	}
}

// TestVerifyFromAClusterWithoutCilium: without Cilium's CRDs (the API
// server answers 404), verify --policies cluster judges the NetworkPolicies
// as before, says so once in the log, and says what it says of the same
// policies in a directory.
func TestVerifyFromAClusterWithoutCilium(t *testing.T) {
	const dir = "../../testdata/netpol/current"
	nps, err := enforcer.LoadDir(dir)
	if err != nil || len(nps) == 0 {
		t.Fatalf("%d policies: %v", len(nps), err)
	}
	api := kubeapitest.Start(t, nps, 2)
	args := append([]string{"--kubeconfig", api.Kubeconfig, "-o", "table", "--log-level", "warn"}, sampleArgs()...)
	verify := func(args ...string) (string, error) {
		t.Helper()
		out, err := runIn(context.Background(), nil, append([]string{"verify"}, args...)...)
		var ec exitCode
		if err != nil && (!errors.As(err, &ec) || ec != 1) {
			t.Fatalf("verify %v: %v\n%s", args, err, out)
		}
		return out, err
	}
	fromCluster, errCluster := verify(append([]string{"--policies", "cluster"}, args...)...)
	fromDir, errDir := verify(append([]string{"--policies", dir}, args...)...)
	if fromCluster != fromDir || (errCluster == nil) != (errDir == nil) {
		t.Errorf("from the cluster (%v):\n%s\nfrom the directory (%v):\n%s", errCluster, fromCluster, errDir, fromDir)
	}
	if !strings.Contains(fromCluster, "would be denied") {
		t.Errorf("no verdict line:\n%s", fromCluster)
	}
	logs, _ := verify(append(append([]string{"--policies", "cluster"}, args...), "--log-level", "info")...)
	if n := strings.Count(logs, "Cilium's CRDs are not installed"); n != 1 || strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("%d info lines about the missing CRDs:\n%s", n, logs)
	}
	if !strings.Contains(logs, "cilium_policies=0") {
		t.Errorf("the count of Cilium policies is not logged:\n%s", logs)
	}
}

// TestPoliciesFromTheClusterForbidden: an API server that forbids listing
// the Cilium policies makes verify (exit 2) and report fail with an error
// naming the RBAC rule to add, instead of judging by fewer policies.
func TestPoliciesFromTheClusterForbidden(t *testing.T) {
	api := kubeapitest.Start(t, nil, 2)
	api.SetCilium(t, nil)
	api.Forbid(kubeapitest.CNPPath)
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-400-tcp-flows.json")
	out, err := runIn(context.Background(), nil, "verify", "--policies", "cluster", "--kubeconfig", api.Kubeconfig, file, "--log-level", "warn")
	var ec exitCode
	if !errors.As(err, &ec) || ec != 2 {
		t.Fatalf("verify: %v, want exit 2\n%s", err, out)
	}
	for _, want := range []string{"flowwarden verify: --policies: kubernetes API " + api.URL, "list ciliumnetworkpolicies.cilium.io: forbidden", kubeapi.CiliumRBACRule} {
		if !strings.Contains(out, want) {
			t.Errorf("verify's error does not say %q:\n%s", want, out)
		}
	}
	out, err = runIn(context.Background(), nil, "report", "--policies", "cluster", "--kubeconfig", api.Kubeconfig, file, "--out", t.TempDir(), "--log-level", "warn")
	if err == nil || !strings.Contains(err.Error(), kubeapi.CiliumRBACRule) {
		t.Errorf("report: %v\n%s", err, out)
	}
}
