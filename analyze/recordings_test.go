package analyze_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/schema"
)

// Two recordings of the same hour, the second with a metadata probe at
// 09:30: read one after the other, the probe is found at 09:30 (its own
// engine), not in the first recording's last window; a recording that
// follows on stays in the same engine.
func TestRecordingsOverlapping(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	pod := schema.Endpoint{Namespace: "shop", Pod: "web-1", Workload: "web", WorkloadKind: "Deployment", Labels: map[string]string{"app": "web"}}
	world := schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}
	flow := func(at time.Time, dst string) schema.Flow {
		return schema.Flow{Time: at, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress, Protocol: "TCP",
			Src: pod, SrcIP: netip.MustParseAddr("10.0.0.1"), Dst: world, DstIP: netip.MustParseAddr(dst), DstPort: 80}
	}
	hour := func(probeAt time.Duration) []schema.Flow {
		var fs []schema.Flow
		for m := range 60 {
			at := t0.Add(time.Duration(m) * time.Minute)
			fs = append(fs, flow(at, "198.51.100.10"))
			if probeAt >= 0 && time.Duration(m)*time.Minute == probeAt {
				fs = append(fs, flow(at.Add(time.Second), "169.254.169.254"))
			}
		}
		return fs
	}
	for _, tc := range []struct {
		name     string
		second   []schema.Flow
		runs     int
		probeAt  time.Time
		findings int
	}{
		{"same hour", hour(30 * time.Minute), 2, t0.Add(30 * time.Minute), 1},
		{"the next hour", func() []schema.Flow {
			fs := hour(30 * time.Minute)
			for i := range fs {
				fs[i].Time = fs[i].Time.Add(time.Hour)
			}
			return fs
		}(), 1, t0.Add(90 * time.Minute), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var found analyze.Collector
			r, err := analyze.NewRecordings(analyze.DefaultConfig(), &found)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for _, rec := range [][]schema.Flow{hour(-1), tc.second} {
				r.NextRecording()
				if err := r.Write(ctx, rec...); err != nil {
					t.Fatal(err)
				}
			}
			r.Flush()
			fs := found.Findings()
			if r.Runs != tc.runs || len(fs) != tc.findings || fs[0].Detector != "metadata-access" || !fs[0].Start.Equal(tc.probeAt) {
				t.Fatalf("%d runs, findings %+v; want %d runs, the probe at %s", r.Runs, fs, tc.runs, tc.probeAt)
			}
		})
	}
}
