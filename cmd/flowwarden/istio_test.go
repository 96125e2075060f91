package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestRecommendIstio: the sidecar of reviews-v1 logged three requests from
// productpage over mutual TLS and one in plaintext from an address outside
// the cluster; Hubble's flows tell the pods. recommend --flavor istio
// writes reviews-v1's ALLOW policy (a principal rule with the /ratings/*
// family, an ipBlocks rule for the plaintext caller), and no
// PeerAuthentication for bookinfo, whose plaintext caller it names.
func TestRecommendIstio(t *testing.T) {
	dsn, _ := chtest.Database(t)
	line := func(path, remote, sni string) string {
		return `[2021-10-04T14:31:02.100Z] "GET ` + path + ` HTTP/1.1" 200 - via_upstream - "-" 0 295 7 6 "-" "python-requests/2.21.0" "r-1" "ratings:9080" "127.0.0.1:9080" inbound|9080|| 127.0.0.1:41854 10.156.1.12:9080 ` + remote + ` ` + sni + ` default`
	}
	mtls := "outbound_.9080_._.ratings.bookinfo.svc.cluster.local"
	log := strings.Join([]string{
		line("/ratings/0", "10.156.2.8:40110", mtls),
		line("/ratings/1", "10.156.2.8:40112", mtls),
		line("/ratings/2?x=1", "10.156.2.8:40114", mtls),
		line("/ratings/0", "10.99.0.5:50000", "-"),
		// reviews-v1's labels are unknown: no policy rather than one for the whole namespace.
		strings.Replace(line("/reviews/0", "10.156.2.8:40116", mtls), "10.156.1.12:9080", "10.156.0.10:9080", 1),
	}, "\n")
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, []byte(log+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--log-level", "warn",
		"--hubble-file", "../../testdata/hubble/basic-sample-348-http-flows.json", "--envoy-file", path); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	dir := t.TempDir()
	out, err := run(t, "recommend", "--flavor", "istio", "--clickhouse", dsn, "--since", "2021-10-04T00:00:00Z", "--until", "2021-10-05T00:00:00Z",
		"--out", dir, "--log-level", "warn")
	if err != nil {
		t.Fatalf("recommend --flavor istio: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1 AuthorizationPolicies (ALLOW) from 5 distinct inbound requests") ||
		!strings.Contains(out, "no AuthorizationPolicy for bookinfo/reviews-v1: its pods' stable labels are unknown") ||
		!strings.Contains(out, "mTLS STRICT would break bookinfo: plaintext callers 10.99.0.5 (1); no PeerAuthentication written") {
		t.Errorf("output:\n%s", out)
	}
	y, err := os.ReadFile(filepath.Join(dir, "bookinfo", "ratings-v1.authz.yaml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, s := range []string{"action: ALLOW", "namespaces:\n        - bookinfo", "app: ratings", "- /ratings/*", "- 10.99.0.5/32", "- /ratings/0", `- "9080"`} {
		if !strings.Contains(string(y), s) {
			t.Errorf("ratings-v1.authz.yaml lacks %q:\n%s", s, y)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bookinfo", "peer-authentication.yaml")); err == nil {
		t.Error("a STRICT PeerAuthentication was written for bookinfo, which has a plaintext caller")
	}
}
