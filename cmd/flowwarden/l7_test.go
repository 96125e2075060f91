package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecommendCiliumL7(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", "--l7", "--hubble-file",
		filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json"), "--out", dir, "--log-level", "warn")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "L7 istio-system/prometheus egress TCP/9990: 1 http rules") || !strings.Contains(out, "stays L4: no DNS lookups seen") {
		t.Errorf("output:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	for i := 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "  L7 ") && lines[i] == lines[i-1] {
			t.Errorf("L7 note printed twice: %q", lines[i])
		}
	}
	y, err := os.ReadFile(filepath.Join(dir, "istio-system", "prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "method: ^GET$\n          path: ^/metrics$") {
		t.Errorf("prometheus.yaml:\n%s", y)
	}
	if _, err := runIn(context.Background(), nil, "recommend", "--l7", "--hubble-file", "x", "--out", dir); err == nil || !strings.Contains(err.Error(), "--l7 needs --flavor cilium") {
		t.Errorf("--l7 without cilium: %v", err)
	}
}

// verify judges layer 7 too: the written Cilium HTTP rules pass against the
// traffic they came from, and fail (exit 1) once a path is changed.
func TestVerifyJudgesL7(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json")
	if out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", "--l7", "--hubble-file", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runIn(context.Background(), nil, "verify", "--policies", dir, "--hubble-file", file, "--log-level", "warn")
	if err != nil || !strings.Contains(out, "HTTP requests judged, 0 would be denied") || strings.Contains(out, "layer 7: 0 Istio AuthorizationPolicies, 0 ") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	p := filepath.Join(dir, "istio-system", "prometheus.yaml")
	y, _ := os.ReadFile(p)
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(y), "^/metrics$", "^/healthz$")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runIn(context.Background(), nil, "verify", "--policies", dir, "--hubble-file", file, "--log-level", "warn")
	if err == nil || !strings.Contains(out, "L7 denied:") || !strings.Contains(out, "GET /metrics: cilium: no HTTP rule on egress of istio-system/prometheus") {
		t.Fatalf("verify after the change: %v\n%s", err, out)
	}
}

// report writes l7.md next to the report when the policies hold L7 rules.
func TestReportL7(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-348-http-flows.json")
	if o, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", "--l7", "--hubble-file", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
	o, err := runIn(context.Background(), nil, "report", "--policies", dir, "--hubble-file", file, "--out", out, "--log-level", "warn")
	if err != nil || !strings.Contains(o, "layer 7: ") || !strings.Contains(o, ", 0 would be denied") {
		t.Fatalf("report: %v\n%s", err, o)
	}
	md, err := os.ReadFile(filepath.Join(out, "l7.md"))
	if err != nil || !strings.Contains(string(md), "method ^GET$ path ^/metrics$") {
		t.Errorf("l7.md: %v\n%s", err, md)
	}
}

// TestVerifyJudgesCiliumL4: a directory of CiliumNetworkPolicies
// (recommend --flavor cilium) is judged at layer 3/4: the written policies
// pass against the traffic they came from; with details-v1's ingress
// naming a caller nobody is (a typo), productpage's calls are regressions
// (exit 1), annotated on details-v1.yaml at its ingress rules.
func TestVerifyJudgesCiliumL4(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-400-tcp-flows.json")
	if out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("recommend: %v\n%s", err, out)
	}
	out, err := runIn(context.Background(), nil, "verify", "--policies", dir, file, "--log-level", "warn")
	if err != nil || !strings.Contains(out, "9 policies; 243 flows checked; 0 would be denied") || strings.Contains(out, "warning") {
		t.Fatalf("verify of the written CiliumNetworkPolicies: %v\n%s", err, out)
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
	out, err = runIn(context.Background(), nil, "verify", "--policies", dir, file, "-o", "github", "--log-level", "warn")
	var ec exitCode
	if !errors.As(err, &ec) || ec != 1 {
		t.Fatalf("verify of the broken copy: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(out, "::error file="+p+",line=") || !strings.Contains(out, "bookinfo/productpage-v1 → bookinfo/details-v1 TCP/9080") ||
		!strings.Contains(out, "ingress of bookinfo/details-v1") || !strings.Contains(out, "on 1 edges") {
		t.Errorf("verify of the broken copy:\n%s", out)
	}
}

// TestReportCountsCiliumPolicies: report --policies over a directory of
// CiliumNetworkPolicies counts them and their allow rules: the written
// policies' unused rules are the DNS egress rules nobody used (one per
// policy here); one more rule for a caller nobody is makes one more unused
// rule. What the figures leave out is said.
func TestReportCountsCiliumPolicies(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-400-tcp-flows.json")
	if out, err := runIn(context.Background(), nil, "recommend", "--flavor", "cilium", file, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("recommend: %v\n%s", err, out)
	}
	report := func() (map[string]any, string) {
		out := t.TempDir()
		o, err := runIn(context.Background(), nil, "report", "--policies", dir, file, "--out", out, "--log-level", "warn")
		if err != nil {
			t.Fatalf("report: %v\n%s", err, o)
		}
		b, err := os.ReadFile(filepath.Join(out, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r, o
	}
	r, out := report()
	sm := r["summary"].(map[string]any)
	if r["policies"] != 9.0 || sm["rules_in_force"] != 25.0 || sm["rules_unused"] != 9.0 ||
		!strings.Contains(out, "(9 rules allowed but unused)") || !strings.Contains(out, "warning: not judged: the blast radius") {
		t.Fatalf("policies %v, rules in force %v, unused %v:\n%s", r["policies"], sm["rules_in_force"], sm["rules_unused"], out)
	}
	p := filepath.Join(dir, "bookinfo", "details-v1.yaml")
	y, _ := os.ReadFile(p)
	extra := strings.Replace(string(y), "  ingress:\n  - {}\n", "  ingress:\n  - {}\n  - fromEndpoints:\n    - matchLabels:\n        k8s:app: nobody\n", 1)
	if extra == string(y) {
		t.Fatalf("details-v1.yaml:\n%s", y)
	}
	if err := os.WriteFile(p, []byte(extra), 0o644); err != nil {
		t.Fatal(err)
	}
	r, out = report()
	sm = r["summary"].(map[string]any)
	if sm["rules_in_force"] != 26.0 || sm["rules_unused"] != 10.0 || !strings.Contains(out, "(10 rules allowed but unused)") {
		t.Errorf("with a rule for nobody: rules in force %v, unused %v:\n%s", sm["rules_in_force"], sm["rules_unused"], out)
	}
}
