package clickhouse_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
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
		if err := envoy.ReadFile(ctx, f, sink, &stats); err != nil {
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

// BenchmarkEachFlow reads 100,000 stored flows back, whole, with the
// enforcer's columns, and grouped into conversations (the samples repeated:
// few distinct ones), against the baseline of ClickHouse sending the same
// rows in its own Native format over HTTP (read and thrown away) in the
// same run.
func BenchmarkEachFlow(b *testing.B) {
	ctx := context.Background()
	const rows = 100000
	flows := repeatedSamples(b, rows)
	conn, dsn := migrated(b, clickhouse.SchemaConfig{})
	var database string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&database); err != nil {
		b.Fatal(err)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		b.Fatal(err)
	}
	_, httpAddr := chtest.Server(b)
	read := func(cols clickhouse.FlowColumns) time.Duration {
		t0 := time.Now()
		n := 0
		if err := clickhouse.EachFlow(ctx, conn, cols, time.Unix(0, 0), time.Time{}, func(*schema.Flow) { n++ }); err != nil || n != rows {
			b.Fatalf("read %d of %d: %v", n, rows, err)
		}
		return time.Since(t0)
	}
	native := func() time.Duration {
		t0 := time.Now()
		q := "SELECT * FROM " + database + ".flows ORDER BY time FORMAT Native"
		resp, err := http.Post(chtest.URL(httpAddr)+"/", "text/plain", strings.NewReader(q))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n == 0 {
			b.Fatalf("native export: %s, %d bytes", resp.Status, n)
		}
		return time.Since(t0)
	}
	grouped := func() time.Duration {
		t0 := time.Now()
		var n uint64
		if err := clickhouse.EachFlowGroup(ctx, conn, time.Unix(0, 0), time.Time{}, func(_ *schema.Flow, flows uint64, _, _ time.Time) { n += flows }); err != nil || n != rows {
			b.Fatalf("grouped %d of %d: %v", n, rows, err)
		}
		return time.Since(t0)
	}
	var all, endpoint, group, base time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base += native()
		all += read(clickhouse.AllColumns)
		endpoint += read(clickhouse.EndpointColumns)
		group += grouped()
	}
	b.ReportMetric(base.Seconds()/group.Seconds(), "grouped/native")
	b.ReportMetric(float64(b.N*rows)/all.Seconds(), "all-flows/s")
	b.ReportMetric(float64(b.N*rows)/endpoint.Seconds(), "endpoint-flows/s")
	b.ReportMetric(base.Seconds()/all.Seconds(), "all/native")
	b.ReportMetric(base.Seconds()/endpoint.Seconds(), "endpoint/native")
}

// TestEachFlowGroupCountsEveryFlowOnce groups the stored samples in
// ClickHouse and compares with the same grouping done here: every flow is
// in exactly one group, with its group's first and last time.
func TestEachFlowGroupCountsEveryFlowOnce(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migrated(t, clickhouse.SchemaConfig{})
	flows := sampleFlows(t)
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	type group struct {
		n           uint64
		first, last time.Time
	}
	key := func(f schema.Flow) string {
		f.Time, f.SrcPort = time.Time{}, 0
		// What the enforcer's columns do not carry (mtls they do: the
		// report's mTLS coverage).
		f.DropReason, f.IPVersion, f.TCPFlags, f.Src.Identity, f.Dst.Identity = "", 0, "", 0, 0
		f.L7Type, f.DNSQuery, f.DNSRCode, f.DNSQType, f.HTTPMethod, f.HTTPPath, f.HTTPStatus = "", "", 0, "", "", "", 0
		f.Bytes, f.Packets, f.DurationMs, f.SrcPrincipal, f.DstPrincipal, f.PolicyNames, f.TraceID = 0, 0, 0, "", "", nil, ""
		return fmt.Sprintf("%+v", f)
	}
	want := map[string]*group{}
	for _, f := range flows {
		k := key(f)
		g := want[k]
		if g == nil {
			g = &group{first: f.Time.UTC(), last: f.Time.UTC()}
			want[k] = g
		}
		g.n++
		if f.Time.Before(g.first) {
			g.first = f.Time.UTC()
		}
		if f.Time.After(g.last) {
			g.last = f.Time.UTC()
		}
	}
	got := map[string]*group{}
	var total uint64
	err := clickhouse.EachFlowGroup(ctx, conn, time.Unix(0, 0), time.Time{}, func(f *schema.Flow, n uint64, first, last time.Time) {
		k := key(*f)
		if got[k] != nil {
			t.Errorf("group %s read twice", k)
		}
		got[k] = &group{n, first, last}
		total += n
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != uint64(len(flows)) || len(got) != len(want) || len(got) >= len(flows) {
		t.Fatalf("%d flows in %d groups, want %d flows in %d groups", total, len(got), len(flows), len(want))
	}
	for k, w := range want {
		if g := got[k]; g == nil || *g != *w {
			t.Errorf("group %s: got %+v, want %+v", k, g, w)
		}
	}
}
