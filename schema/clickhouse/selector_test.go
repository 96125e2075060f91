package clickhouse

import (
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
