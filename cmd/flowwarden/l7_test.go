package main

import (
	"context"
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
