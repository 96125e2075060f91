package ingest

import (
	"net/netip"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

func podFlow(ip, pod string, at time.Time) schema.Flow {
	return schema.Flow{Time: at, SrcIP: netip.MustParseAddr(ip), Src: schema.Endpoint{Namespace: "ns", Pod: pod}}
}

// TestIdentityCacheMakesRoom: a full cache drops every expired address at
// once when a new pod appears, and the oldest live one when none expired.
func TestIdentityCacheMakesRoom(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	c := NewIdentityCache(time.Minute, 3)
	for i, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		f := podFlow(ip, "old", t0.Add(time.Duration(i)*time.Second))
		c.Learn(&f)
	}
	f := podFlow("10.0.0.4", "new", t0.Add(time.Hour))
	c.Learn(&f)
	if c.Len() != 1 {
		t.Fatalf("after the expired addresses went: %d known, want 1", c.Len())
	}
	for i, ip := range []string{"10.0.0.5", "10.0.0.6"} {
		f := podFlow(ip, "live", t0.Add(time.Hour+time.Duration(i+1)*time.Second))
		c.Learn(&f)
	}
	f = podFlow("10.0.0.7", "newest", t0.Add(time.Hour+10*time.Second))
	c.Learn(&f) // full, nothing expired: the oldest (10.0.0.4) goes
	if c.Len() != 3 {
		t.Fatalf("%d known, want 3", c.Len())
	}
	probe := schema.Flow{Time: t0.Add(time.Hour + 10*time.Second), SrcIP: netip.MustParseAddr("10.0.0.4")}
	c.Enrich(&probe)
	if probe.Src.Pod != "" {
		t.Errorf("the oldest live address was kept: %+v", probe.Src)
	}
	probe = schema.Flow{Time: t0.Add(time.Hour + 10*time.Second), SrcIP: netip.MustParseAddr("10.0.0.5")}
	c.Enrich(&probe)
	if probe.Src.Pod != "live" {
		t.Errorf("a live address was lost: %+v", probe.Src)
	}
}
