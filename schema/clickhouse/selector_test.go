package clickhouse

import (
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TestFlowsSQL: the PR body's query, byte for byte as enforcer wrote it
// before the selector, and a bounded, filtered one.
func TestFlowsSQL(t *testing.T) {
	pr := FlowsSQL(schema.FlowSelector{Dst: schema.EndpointSelector{Namespace: "shop", Workload: "o'api"}, DstPort: 8080,
		Replies: schema.Requests(), NewestFirst: true, Limit: 50}, "time, src_pod, dst_namespace, dst_workload, dst_addr, dst_port, protocol, verdict")
	want := "SELECT time, src_pod, dst_namespace, dst_workload, dst_addr, dst_port, protocol, verdict\nFROM flows\n" +
		"WHERE dst_namespace = 'shop' AND dst_workload = 'o\\'api' AND dst_port = 8080 AND NOT is_reply\nORDER BY time DESC\nLIMIT 50"
	if pr != want {
		t.Fatalf("got\n%s\nwant\n%s", pr, want)
	}
	from := time.Date(2026, 3, 2, 9, 0, 0, 0, time.FixedZone("CET", 3600))
	yes := true
	got := FlowsSQL(schema.FlowSelector{From: from, To: from.Add(time.Minute), Src: schema.EndpointSelector{Namespace: "a"},
		Verdict: schema.VerdictDropped, Direction: schema.DirectionEgress, Replies: &yes}, "time")
	want = "SELECT time\nFROM flows\nWHERE time >= toDateTime64('2026-03-02 08:00:00.000000000', 9, 'UTC') AND time < toDateTime64('2026-03-02 08:01:00.000000000', 9, 'UTC')" +
		" AND src_namespace = 'a' AND verdict = 'DROPPED' AND direction = 'EGRESS' AND is_reply\nORDER BY time"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestFindingSQL: detectors' conditions render as the SQL they wrote
// themselves before the selector (byte for byte: metadata-access and
// lateral-scan's), values quoted, numbers never pasted in unchecked.
func TestFindingSQL(t *testing.T) {
	from := time.Date(2026, 3, 2, 9, 25, 0, 0, time.UTC)
	world := schema.AnyOf(
		[]schema.Cond{schema.Eq("dst_workload_kind", "reserved"), {Field: "dst_workload", Op: schema.OpPrefix, Values: []string{"world"}}},
		[]schema.Cond{{Field: "dst_identity", Op: schema.OpNumEq, Values: []string{"2"}}},
		[]schema.Cond{{Field: "dst_identity", Op: schema.OpNumGE, Values: []string{"16777216"}}})
	world.Not = true
	got := FindingSQL(schema.FlowSelector{From: from, To: from.Add(time.Minute), Where: []schema.Cond{
		schema.Eq("src_namespace", "bookinfo"), schema.IsFalse("is_reply"),
		schema.AnyOf(
			[]schema.Cond{{Field: "dst_ip", Op: schema.OpAddrIn, Values: []string{"169.254.169.254", "fd00:ec2::254"}}},
			[]schema.Cond{{Field: "dst_names", Op: schema.OpHasAny, Values: []string{"metadata.google.internal", "metadata.google.internal."}}}),
		schema.AnyOf([]schema.Cond{world}, []schema.Cond{{Field: "dst_addr", Op: schema.OpInPrefix, Values: []string{"10.0.0.0/8"}}}, []schema.Cond{schema.IsTrue("is_reply")}),
		{Field: "dns_query", Op: schema.OpDNSUnder, Values: []string{"ex'ample.com"}},
		{Field: "dst_identity", Op: schema.OpNumEq, Values: []string{"1 OR 1=1"}},
	}})
	want := "SELECT time, src_namespace, src_pod, src_workload, dst_namespace, dst_workload, dst_addr, dst_port, protocol, verdict, drop_reason, dst_names\nFROM flows\n" +
		"WHERE time >= toDateTime64('2026-03-02 09:25:00.000000000', 9, 'UTC')\n  AND time < toDateTime64('2026-03-02 09:26:00.000000000', 9, 'UTC')\n" +
		"  AND src_namespace = 'bookinfo'\n  AND NOT is_reply\n" +
		"  AND (dst_ip IN (toIPv6('169.254.169.254'), toIPv6('fd00:ec2::254')) OR hasAny(dst_names, ['metadata.google.internal', 'metadata.google.internal.']))\n" +
		"  AND (NOT (dst_workload_kind = 'reserved' AND startsWith(dst_workload, 'world') OR dst_identity = 2 OR dst_identity >= 16777216) OR isIPAddressInRange(dst_addr, '10.0.0.0/8') OR is_reply)\n" +
		"  AND (position(lower(dns_query), '.ex\\'ample.com.') > 0 OR startsWith(lower(dns_query), 'ex\\'ample.com'))\n" +
		"  AND false\nORDER BY time"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	f := schema.Finding{Counters: &schema.CounterSelector{From: from, To: from.Add(time.Minute), Node: "n", Family: "inet", Table: "t", Chain: "c", Handle: 7}}
	RenderQuery(&f)
	if !strings.Contains(f.Query, "FROM nft_counters") || !strings.Contains(f.Query, "handle = 7") || !strings.Contains(f.Query, "`table` = 't'") {
		t.Fatalf("counters query %s", f.Query)
	}
}
