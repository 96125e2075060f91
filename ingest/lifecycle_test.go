package ingest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// TestEnrichAttributesBeforeTheNextSink: Enrich fills the endpoints the
// cache knows and leaves alone the ones a source already attributed, and
// the next sink sees the attributed flows.
func TestEnrichAttributesBeforeTheNextSink(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	c := NewIdentityCache(time.Minute, 0)
	learned := podFlow("10.0.0.1", "api-1", t0)
	c.Learn(&learned)

	var got []schema.Flow
	sink := Enrich(c, SinkFunc(func(_ context.Context, flows ...schema.Flow) error {
		got = append(got, flows...)
		return nil
	}))
	known := schema.Flow{Time: t0.Add(time.Second), SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.9")}
	own := schema.Flow{Time: t0.Add(time.Second), SrcIP: netip.MustParseAddr("10.0.0.1"), Src: schema.Endpoint{Namespace: "mine", Pod: "p"}}
	if err := sink.Write(context.Background(), known, own); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("next sink got %d flows, want 2", len(got))
	}
	if got[0].Src.Pod != "api-1" || got[0].Dst.Namespace != "" {
		t.Errorf("known address not attributed (or unknown one invented): src %+v dst %+v", got[0].Src, got[0].Dst)
	}
	if got[1].Src.Namespace != "mine" {
		t.Errorf("an endpoint the source attributed was overwritten: %+v", got[1].Src)
	}
	boom := errors.New("full")
	if err := Enrich(c, SinkFunc(func(context.Context, ...schema.Flow) error { return boom })).Write(context.Background(), known); !errors.Is(err, boom) {
		t.Errorf("next sink's error not passed on: %v", err)
	}
}

// TestCounterFanoutReachesEverySink: every sink gets the samples, also
// after one of them failed, and the failure is returned.
func TestCounterFanoutReachesEverySink(t *testing.T) {
	var a, b int
	boom := errors.New("insert failed")
	fo := CounterFanout{
		CounterSinkFunc(func(_ context.Context, s []schema.CounterSample) error { a += len(s); return boom }),
		CounterSinkFunc(func(_ context.Context, s []schema.CounterSample) error { b += len(s); return nil }),
	}
	err := fo.WriteCounters(context.Background(), make([]schema.CounterSample, 3))
	if a != 3 || b != 3 {
		t.Errorf("sinks got %d and %d samples, want 3 each", a, b)
	}
	if !errors.Is(err, boom) {
		t.Errorf("error %v, want the failing sink's", err)
	}
}
