package clickhouse_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// TestResumePointOfAShare: a replica resumes after the newest stored flow
// surely of its share, and holds as already stored every flow from then on
// that may be of it: here a reply from another share's namespace to one of
// its own, which stored rows cannot tell from a request (the deprecated
// reply flag), and not the other share's newer flows.
func TestResumePointOfAShare(t *testing.T) {
	ctx := context.Background()
	conn, dsn := migrated(t, clickhouse.DefaultSchemaConfig())
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	flow := func(at time.Duration, src, dst string, reply bool, port uint16) schema.Flow {
		return schema.Flow{Time: t0.Add(at), Node: "n1", Source: schema.SourceHubble, Verdict: "FORWARDED", Protocol: "TCP", IsReply: reply,
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), SrcPort: port, DstPort: 80,
			Src: schema.Endpoint{Namespace: src}, Dst: schema.Endpoint{Namespace: dst}}
	}
	flows := []schema.Flow{
		flow(1*time.Second, "a", "b", false, 1), // a's request
		flow(2*time.Second, "a", "b", false, 2), // a's newest request: a's resume point
		flow(3*time.Second, "b", "a", true, 3),  // a reply to a (or b's request, by the deprecated flag)
		flow(4*time.Second, "b", "c", false, 4), // b's, not a's
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	w, err := clickhouse.NewWriter(clickhouse.DefaultWriterConfig(), dsn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	since, until, keys, err := w.ResumePointOf(ctx, conn, "hubble", func(ns string) bool { return ns == "a" })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{schema.FlowKey(&flows[1]), schema.FlowKey(&flows[2])}
	slices.Sort(keys)
	slices.Sort(want)
	if !since.Equal(flows[1].Time) || !until.Equal(flows[2].Time) || !slices.Equal(keys, want) {
		t.Fatalf("share a resumes at %v through %v holding %q; want %v through %v holding %q", since, until, keys, flows[1].Time, flows[2].Time, want)
	}
	// Unsharded: after the newest flow, holding it.
	at, all, err := w.ResumePoint(ctx, conn, "hubble")
	if err != nil || !at.Equal(flows[3].Time) || len(all) != 1 || all[0] != schema.FlowKey(&flows[3]) {
		t.Fatalf("ResumePoint: %v %q %v; want %v holding the newest flow", at, all, err, flows[3].Time)
	}
}
