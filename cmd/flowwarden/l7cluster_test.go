package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
)

// ratingsAuthz allows GET /ratings/1 only into bookinfo's ratings pods.
const ratingsAuthz = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-v1
  namespace: bookinfo
spec:
  action: ALLOW
  selector:
    matchLabels:
      app: ratings
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/ratings/1"]
`

// verifyExit runs verify and wants exit status want (0, 1 or 2).
func verifyExit(t *testing.T, want int, args ...string) string {
	t.Helper()
	out, err := runIn(context.Background(), nil, append([]string{"verify"}, args...)...)
	var ec exitCode
	switch {
	case want == 0 && err != nil, want != 0 && (!errors.As(err, &ec) || int(ec) != want):
		t.Fatalf("verify %v: %v, want exit %d\n%s", args, err, want, out)
	}
	return out
}

// TestVerifyAuthorizationPoliciesFromTheCluster: ratings' sidecar logged
// GET /ratings/0 and /ratings/1 from productpage (Istio's text format;
// Hubble's flows tell the pods); the AuthorizationPolicy in force allows
// /ratings/1 only. verify --policies cluster reports the L7 denial of
// /ratings/0 and exits 1, with the same output as from a directory or a
// file holding the same policy.
func TestVerifyAuthorizationPoliciesFromTheCluster(t *testing.T) {
	line := func(path, port string) string {
		return `[2021-10-04T14:31:02.100Z] "GET ` + path + ` HTTP/1.1" 200 - via_upstream - "-" 0 295 7 6 "-" "python-requests/2.21.0" "r-1" "ratings:9080" "127.0.0.1:9080" inbound|9080|| 127.0.0.1:41854 10.156.1.12:9080 10.156.2.8:` + port + ` outbound_.9080_._.ratings.bookinfo.svc.cluster.local default`
	}
	tmp := t.TempDir()
	envoy := filepath.Join(tmp, "istio-proxy.log")
	if err := os.WriteFile(envoy, []byte(line("/ratings/0", "40110")+"\n"+line("/ratings/1", "40112")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "policies")
	file := filepath.Join(dir, "bookinfo", "ratings-v1.authz.yaml")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(ratingsAuthz), 0o644); err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(ratingsAuthz), &obj); err != nil {
		t.Fatal(err)
	}
	obj["status"] = map[string]any{"observedGeneration": "1"} // kept by Istio's status manager
	api := kubeapitest.Start(t, nil, 2)
	api.SetIstio(t, obj)
	flows := []string{"--kubeconfig", api.Kubeconfig, "--hubble-file", filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json"),
		"--envoy-file", envoy, "--log-level", "warn"}
	args := append([]string{"-o", "table"}, flows...)
	fromCluster := verifyExit(t, 1, append([]string{"--policies", "cluster"}, args...)...)
	for _, want := range []string{
		"L7 denied: 2021-10-04T14:31:02Z bookinfo/productpage-v1-6b746f74dc-ffh56 → bookinfo/ratings-v1-b6994bb9-4dt5c TCP/9080 GET /ratings/0: istio: ",
		"layer 7: 1 Istio AuthorizationPolicies, 0 CiliumNetworkPolicies; 2 HTTP requests judged, 1 would be denied",
	} {
		if !strings.Contains(fromCluster, want) {
			t.Errorf("verify --policies cluster does not say %q:\n%s", want, fromCluster)
		}
	}
	if strings.Contains(fromCluster, "/ratings/1:") || strings.Contains(fromCluster, "layer 7: not judged") {
		t.Errorf("verify --policies cluster:\n%s", fromCluster)
	}
	if fromDir := verifyExit(t, 1, append([]string{"--policies", dir}, args...)...); fromDir != fromCluster {
		t.Errorf("from the cluster:\n%s\nfrom the directory:\n%s", fromCluster, fromDir)
	}
	if fromFile := verifyExit(t, 1, append([]string{"--policies", file}, args...)...); fromFile != fromCluster {
		t.Errorf("from the cluster:\n%s\nfrom the file:\n%s", fromCluster, fromFile)
	}

	// report --policies cluster writes l7.md from the same policies as from the directory.
	l7md := func(spec string) string {
		t.Helper()
		out := t.TempDir()
		if o, err := runIn(context.Background(), nil, append([]string{"report", "--policies", spec, "--out", out}, flows...)...); err != nil {
			t.Fatalf("report --policies %s: %v\n%s", spec, err, o)
		}
		md, err := os.ReadFile(filepath.Join(out, "l7.md"))
		if err != nil {
			t.Fatalf("report --policies %s: %v", spec, err)
		}
		return string(md)
	}
	if md := l7md("cluster"); !strings.Contains(md, "GET /ratings/0: istio: ") || md != l7md(dir) {
		t.Errorf("l7.md from the cluster:\n%s\nfrom the directory:\n%s", md, l7md(dir))
	}
}

// TestVerifyCiliumHTTPRulesFromTheCluster: the Cilium HTTP rules recommend
// --l7 wrote, with prometheus's path changed, deny its GET /metrics from
// the cluster as from the directory (exit 1, same output).
func TestVerifyCiliumHTTPRulesFromTheCluster(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json")
	if out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", "--l7", "--hubble-file", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	p := filepath.Join(dir, "istio-system", "prometheus.yaml")
	y, _ := os.ReadFile(p)
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(y), "^/metrics$", "^/healthz$")), 0o644); err != nil {
		t.Fatal(err)
	}
	// What recommend left out on purpose is recorded next to the files
	// only: without the record both say the same of layer 3/4.
	if err := os.Remove(filepath.Join(dir, enforcer.LeftOutFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	cnps, err := enforcer.LoadCiliumDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	api := kubeapitest.Start(t, nil, 3)
	api.SetCilium(t, cnps)
	args := []string{"--kubeconfig", api.Kubeconfig, "--hubble-file", file, "-o", "table", "--log-level", "warn"}
	fromCluster := verifyExit(t, 1, append([]string{"--policies", "cluster"}, args...)...)
	if !strings.Contains(fromCluster, "GET /metrics: cilium: no HTTP rule on egress of istio-system/prometheus") || strings.Contains(fromCluster, " 0 CiliumNetworkPolicies;") {
		t.Errorf("verify --policies cluster:\n%s", fromCluster)
	}
	if fromDir := verifyExit(t, 1, append([]string{"--policies", dir}, args...)...); fromDir != fromCluster {
		t.Errorf("from the cluster:\n%s\nfrom the directory:\n%s", fromCluster, fromDir)
	}
}

// TestVerifyFromAClusterWithoutIstio: without Istio's CRDs (404) verify
// --policies cluster judges as before (no layer-7 line) and says so in
// one info line.
func TestVerifyFromAClusterWithoutIstio(t *testing.T) {
	const dir = "../../testdata/netpol/current"
	nps, err := enforcer.LoadDir(dir)
	if err != nil || len(nps) == 0 {
		t.Fatalf("%d policies: %v", len(nps), err)
	}
	api := kubeapitest.Start(t, nps, 2)
	args := append([]string{"--kubeconfig", api.Kubeconfig, "-o", "table"}, sampleArgs()...)
	run := func(args ...string) string {
		t.Helper()
		out, err := runIn(context.Background(), nil, append([]string{"verify"}, args...)...)
		var ec exitCode
		if err != nil && (!errors.As(err, &ec) || ec != 1) {
			t.Fatalf("verify %v: %v\n%s", args, err, out)
		}
		return out
	}
	fromCluster := run(append(args, "--policies", "cluster", "--log-level", "warn")...)
	if fromDir := run(append(args, "--policies", dir, "--log-level", "warn")...); fromCluster != fromDir || strings.Contains(fromCluster, "layer 7") {
		t.Errorf("from the cluster:\n%s\nfrom the directory:\n%s", fromCluster, fromDir)
	}
	logs := run(append(args, "--policies", "cluster", "--log-level", "info")...)
	if n := strings.Count(logs, "Istio's CRDs are not installed"); n != 1 || strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") ||
		!strings.Contains(logs, "authorization_policies=0") {
		t.Errorf("%d info lines about Istio's missing CRD:\n%s", n, logs)
	}
}

// TestAuthorizationPoliciesForbidden: an API server that forbids listing
// AuthorizationPolicies makes verify fail (exit 2) naming the RBAC rule,
// instead of judging without them.
func TestAuthorizationPoliciesForbidden(t *testing.T) {
	api := kubeapitest.Start(t, nil, 2)
	api.SetIstio(t)
	api.Forbid(kubeapitest.AuthzPath)
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json")
	out := verifyExit(t, 2, "--policies", "cluster", "--kubeconfig", api.Kubeconfig, file, "--log-level", "warn")
	for _, want := range []string{"flowwarden verify: --policies: kubernetes API " + api.URL, "list authorizationpolicies.security.istio.io: forbidden", kubeapi.IstioRBACRule} {
		if !strings.Contains(out, want) {
			t.Errorf("verify's error does not say %q:\n%s", want, out)
		}
	}
}
