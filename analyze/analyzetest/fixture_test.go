package analyzetest

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flowwarden/flowwarden/schema"
)

// TestFixtureRoundTrip: every field of schema.Flow survives WriteFlows and
// ReadFlows, so a fixture can stand for the flows a parser produced.
func TestFixtureRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 0, 1, 123456000, time.UTC)
	ep := func(ns string, id uint32) schema.Endpoint {
		return schema.Endpoint{Namespace: ns, Pod: "p-1", Workload: "p", WorkloadKind: "Deployment", Labels: map[string]string{"app": "p"}, Identity: id}
	}
	in := []schema.Flow{
		{Time: at, Node: "n1", Source: schema.SourceHubble, Verdict: schema.VerdictDropped, DropReason: "POLICY_DENIED",
			Direction: schema.DirectionEgress, IsReply: true, IPVersion: 4, Protocol: "TCP",
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 443,
			TCPFlags: "SYN,ACK", Src: ep("a", 100), Dst: ep("b", 200), DstNames: []string{"x.example"}, L7Type: "dns",
			DNSQuery: "x.example.", DNSRCode: 3, DNSQType: "TXT", HTTPMethod: "GET", HTTPPath: "/p", HTTPStatus: 503,
			Bytes: 1234, Packets: 7, DurationMs: 42, MTLS: true, SrcPrincipal: "spiffe://c/ns/a/sa/p",
			DstPrincipal: "spiffe://c/ns/b/sa/q", PolicyNames: []string{"a/allow", "b/deny"}, TraceID: "abc123"},
		// IPv6, and an IPv4 flow whose version field says otherwise.
		{Time: at.Add(time.Second), IPVersion: 6, SrcIP: netip.MustParseAddr("fd00::1"), DstIP: netip.MustParseAddr("fd00::2")},
		{Time: at.Add(2 * time.Second), IPVersion: 6, SrcIP: netip.MustParseAddr("::ffff:10.0.0.1"), DstIP: netip.MustParseAddr("::ffff:10.0.0.2")},
	}
	path := filepath.Join(t.TempDir(), "f.flows.jsonl.gz")
	if err := WriteFlows(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadFlows(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out, cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("round trip (-written +read):\n%s", d)
	}
}

// TestDiff: Diff sees a changed field and ignores what a fixture drops.
func TestDiff(t *testing.T) {
	a := []schema.Flow{{Time: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), SrcIP: netip.MustParseAddr("10.0.0.1"), Src: schema.Endpoint{Labels: map[string]string{}}}}
	b := []schema.Flow{{Time: a[0].Time.In(time.FixedZone("x", 3600)), IPVersion: 4, SrcIP: netip.MustParseAddr("10.0.0.1")}}
	if d := Diff(a, b); d != "" {
		t.Errorf("same flows up to location, empty labels and IPVersion: %s", d)
	}
	b[0].DstPort = 53
	if Diff(a, b) == "" {
		t.Error("a changed port went unnoticed")
	}
}

// TestReadFlowsShares: flows read back share equal strings and label maps,
// as ingest's decoders hand them out (the engine's benchmarks read fixtures).
func TestReadFlowsShares(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	ep := schema.Endpoint{Namespace: "shop", Workload: "web", Labels: map[string]string{"app": "web", "tier": "front"}}
	flows := []schema.Flow{
		{Time: at, SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Src: ep},
		{Time: at, SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), Src: ep},
	}
	path := filepath.Join(t.TempDir(), "f.flows.jsonl.gz")
	if err := WriteFlows(path, flows); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFlows(path)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(got[0].Src.Labels).UnsafePointer() != reflect.ValueOf(got[1].Src.Labels).UnsafePointer() {
		t.Error("equal label sets read into two maps")
	}
	if unsafe.StringData(got[0].Src.Workload) != unsafe.StringData(got[1].Src.Workload) {
		t.Error("equal workload names read into two strings")
	}
}
