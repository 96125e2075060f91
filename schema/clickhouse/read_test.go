package clickhouse_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// everyField is a flow with every field set to a value of its own, so a
// column read into the wrong field cannot go unnoticed.
func everyField(at time.Time) schema.Flow {
	return schema.Flow{
		Time: at, Node: "node-7", Source: schema.SourceConntrack, Verdict: schema.VerdictDropped, DropReason: "POLICY_DENIED",
		Direction: schema.DirectionIngress, IsReply: true, IPVersion: 6, Protocol: "TCP",
		SrcIP: netip.MustParseAddr("fd00::1"), DstIP: netip.MustParseAddr("fd00::2"), SrcPort: 40001, DstPort: 8443, TCPFlags: "SYN,ACK",
		Src:      schema.Endpoint{Namespace: "ns-a", Pod: "pod-a-1", Workload: "wl-a", WorkloadKind: "Deployment", Labels: map[string]string{"app": "a"}, Identity: 11},
		Dst:      schema.Endpoint{Namespace: "ns-b", Pod: "pod-b-1", Workload: "wl-b", WorkloadKind: "StatefulSet", Labels: map[string]string{"app": "b", "tier": "db"}, Identity: 12},
		DstNames: []string{"b.example.com", "b.internal"}, L7Type: "http", DNSQuery: "b.example.com.", DNSRCode: 3,
		HTTPMethod: "POST", HTTPPath: "/upload", HTTPStatus: 503, Bytes: 123456, Packets: 789, DurationMs: 4321, MTLS: true,
		SrcPrincipal: "spiffe://cluster.local/ns/ns-a/sa/a", DstPrincipal: "spiffe://cluster.local/ns/ns-b/sa/b",
		PolicyNames: []string{"ns-b/deny-all", "ns-b/allow-a"}, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

// TestEachFlowReadsBackWhatWasWritten writes the published Hubble and Envoy
// samples and a flow with every field set, and reads them back whole: the
// history detect --since replays is the flows as they were ingested.
func TestEachFlowReadsBackWhatWasWritten(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migrated(t, clickhouse.SchemaConfig{}) // no TTL: the samples are years old
	flows := sampleFlows(t)
	logs, _ := filepath.Glob("../../testdata/istio-envoy/*.log")
	for _, f := range logs {
		var stats ingest.Stats
		sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { flows = append(flows, fs...); return nil })
		if err := envoy.ReadFile(ctx, f, nil, sink, &stats); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC)
	flows = append(flows, everyField(at))
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}

	var got []schema.Flow
	var last time.Time
	if err := clickhouse.EachFlow(ctx, conn, clickhouse.AllColumns, time.Unix(0, 0), time.Time{}, func(f *schema.Flow) {
		if f.Time.Before(last) {
			t.Errorf("flow at %s after one at %s: not oldest first", f.Time, last)
		}
		last = f.Time
		got = append(got, *f)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(flows) {
		t.Fatalf("read %d flows of %d written", len(got), len(flows))
	}
	key := func(f schema.Flow) string { return fmt.Sprintf("%+v", f) }
	sort.Slice(got, func(i, j int) bool { return key(got[i]) < key(got[j]) })
	want := append([]schema.Flow(nil), flows...)
	for i := range want {
		want[i].Time = want[i].Time.UTC()
	}
	sort.Slice(want, func(i, j int) bool { return key(want[i]) < key(want[j]) })
	diffs := 0
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			if diffs++; diffs <= 3 {
				t.Errorf("flow read back differs:\ngot  %+v\nwant %+v", got[i], want[i])
			}
		}
	}
	if diffs > 0 {
		t.Fatalf("%d of %d flows differ", diffs, len(want))
	}

	// The window is half-open, to the nanosecond, and EndpointColumns
	// leaves the other fields empty.
	var window []schema.Flow
	if err := clickhouse.EachFlow(ctx, conn, clickhouse.EndpointColumns, at, at.Add(time.Nanosecond), func(f *schema.Flow) { window = append(window, *f) }); err != nil {
		t.Fatal(err)
	}
	if len(window) != 1 || window[0].Dst.Pod != "pod-b-1" || window[0].Direction != schema.DirectionIngress || window[0].Bytes != 0 || window[0].TraceID != "" {
		t.Errorf("[at, at+1ns) with endpoint columns: %+v", window)
	}
	window = nil
	if err := clickhouse.EachFlow(ctx, conn, clickhouse.EndpointColumns, at.Add(-time.Nanosecond), at, func(f *schema.Flow) { window = append(window, *f) }); err != nil {
		t.Fatal(err)
	}
	if len(window) != 0 {
		t.Errorf("[at-1ns, at) holds %d flows, want none", len(window))
	}
}
