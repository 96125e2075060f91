package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/schema"
)

// reportMTLS stores flows, runs report --since over their window (with
// extra flags) and returns report.json's mTLS coverage and report.md.
func reportMTLS(t *testing.T, flows []schema.Flow, extra ...string) (*enforcer.MTLSReport, string) {
	t.Helper()
	dsn := storeFlows(t, flows)
	first, last := flows[0].Time, flows[0].Time
	for _, f := range flows {
		if f.Time.Before(first) {
			first = f.Time
		}
		if f.Time.After(last) {
			last = f.Time
		}
	}
	out := t.TempDir()
	args := append([]string{"report", "--clickhouse", dsn, "--since", first.Add(-time.Minute).Format(time.RFC3339),
		"--until", last.Add(time.Minute).Format(time.RFC3339), "--out", out, "--log-level", "warn"}, extra...)
	if o, err := run(t, args...); err != nil {
		t.Fatalf("report: %v\n%s", err, o)
	}
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		MTLS *enforcer.MTLSReport `json:"mtls_coverage"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.MTLS == nil {
		t.Fatalf("report.json has no mtls_coverage (%v)", err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	return r.MTLS, string(md)
}

// sameCoverage fails unless the report's per-namespace figures are
// analyze.MTLSCoverageOf over the flows.
func sameCoverage(t *testing.T, got *enforcer.MTLSReport, flows []schema.Flow) {
	t.Helper()
	want := analyze.MTLSCoverageOf(flows)
	if len(want) == 0 {
		t.Fatal("no inbound mesh requests in the flows: the comparison proves nothing")
	}
	var cov []schema.NamespaceCoverage
	var secured, total uint64
	for _, n := range got.Namespaces {
		cov = append(cov, n.NamespaceCoverage)
	}
	for _, c := range want {
		secured, total = secured+c.Secured, total+c.Total
	}
	if fmt.Sprintf("%+v", cov) != fmt.Sprintf("%+v", want) {
		t.Errorf("report's coverage %+v, MTLSCoverageOf %+v", cov, want)
	}
	if got.Secured != secured || got.Requests != total {
		t.Errorf("report's totals %d of %d secured, want %d of %d", got.Secured, got.Requests, secured, total)
	}
}

type ipIdentities map[netip.Addr]schema.Endpoint

func (m ipIdentities) Enrich(f *schema.Flow) {
	if ep, ok := m[f.SrcIP]; ok && f.Src.Workload == "" {
		f.Src = ep
	}
	if ep, ok := m[f.DstIP]; ok && f.Dst.Workload == "" {
		f.Dst = ep
	}
}

// TestReportMTLSCoverageOnIstioSamples: the published Istio access-log
// lines (sleep calls httpbin in foo over mutual TLS), attributed as
// Hubble's identities would, stored and reported over: the report's
// coverage is MTLSCoverageOf over the same flows; without policies no mode
// is shown.
func TestReportMTLSCoverageOnIstioSamples(t *testing.T) {
	ids := ipIdentities{}
	for addr, name := range map[string]string{"10.44.1.27": "httpbin", "10.44.1.23": "sleep"} {
		ids[netip.MustParseAddr(addr)] = schema.Endpoint{Namespace: "foo", Pod: name + "-5f9c8d7b6-x2x4q", Workload: name, WorkloadKind: "Deployment",
			Labels: map[string]string{"app": name, "io.kubernetes.pod.namespace": "foo"}}
	}
	var flows []schema.Flow
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { flows = append(flows, fs...); return nil })
	paths, _ := filepath.Glob("../../testdata/istio-envoy/istio-*")
	for _, p := range paths {
		var stats ingest.Stats
		if err := envoy.ReadFile(context.Background(), p, ingest.Enrich(ids, sink), &stats); err != nil {
			t.Fatal(err)
		}
	}
	got, md := reportMTLS(t, flows)
	sameCoverage(t, got, flows)
	if got.PoliciesGiven || got.Namespaces[0].PeerAuthentication != "" {
		t.Errorf("modes shown without policies: %+v", got)
	}
	if !strings.Contains(md, "## mTLS coverage") || !strings.Contains(md, "| foo | ") {
		t.Errorf("report.md has no mTLS coverage row for foo:\n%s", md)
	}
}

// TestReportMTLSCoverageOnPlaintextInMesh: the plaintext-in-mesh scenario
// (a debug pod calls payments/ledger in plaintext; payments is STRICT),
// stored and reported over with its PeerAuthentications: the coverage is
// MTLSCoverageOf's, payments is STRICT from payments/default and lists
// ledger among its plaintext receivers with exactly its plaintext count.
func TestReportMTLSCoverageOnPlaintextInMesh(t *testing.T) {
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, "plaintext-in-mesh.flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	got, md := reportMTLS(t, flows, "--policies", filepath.Join(scenarioDir, "mesh"))
	sameCoverage(t, got, flows)
	var ledgerPlain uint64
	for _, f := range flows {
		if f.Source == schema.SourceEnvoy && f.Direction == schema.DirectionIngress && f.Dst.Workload == "ledger" && f.DstPort == 8080 && !f.MTLS {
			ledgerPlain++
		}
	}
	var pay *schema.MeshNamespace
	for i, n := range got.Namespaces {
		if n.Namespace == "payments" {
			pay = &got.Namespaces[i]
		}
	}
	if !got.PoliciesGiven || pay == nil || pay.PeerAuthentication != "STRICT" || pay.PeerAuthenticationFrom != "payments/default" {
		t.Fatalf("payments: %+v", pay)
	}
	found := false
	for _, p := range pay.Plaintext {
		if p.Workload == "payments/ledger" && p.Port == 8080 {
			found = true
			if p.Requests != ledgerPlain || p.Mode != "STRICT" || ledgerPlain == 0 {
				t.Errorf("ledger's plaintext %+v, want %d requests, STRICT", p, ledgerPlain)
			}
		}
	}
	if !found {
		t.Errorf("payments lists no plaintext to ledger:8080: %+v", pay.Plaintext)
	}
	if want := fmt.Sprintf("payments/ledger:8080 (%d) STRICT", ledgerPlain); !strings.Contains(md, want) || !strings.Contains(md, "STRICT (payments/default)") {
		t.Errorf("report.md lacks %q:\n%s", want, md)
	}
	if len(got.WithoutMeshTraffic) == 0 || !strings.Contains(md, "Left out, no inbound mesh requests seen: ") {
		t.Errorf("the namespaces without mesh traffic are not named: %v", got.WithoutMeshTraffic)
	}
}
