package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting"
	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// BenchmarkAlertLatency measures, on serve's path (fan-out to the ClickHouse
// writer and the detectors, findings to the Alertmanager sender), the time
// from a metadata probe flow arriving to its alert being accepted by a real
// Alertmanager, while background flows arrive at 50,000 flows/s.
func BenchmarkAlertLatency(b *testing.B) {
	const rate = 50000
	hook := &amtest.Webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	amAddr := amtest.FreeAddr(b)
	amtest.Start(b, hs.URL, amAddr, b.TempDir())

	background, err := hubble.ReadFlows(context.Background(), filepath.Join(scenarioDir, "benign-busy-day.jsonl.gz"))
	if err != nil {
		b.Fatal(err)
	}
	dsn, _ := chtest.Database(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := clickhouse.Migrate(ctx, conn, clickhouse.SchemaConfig{}, nil); err != nil {
		b.Fatal(err)
	}
	w, _ := clickhouse.NewWriter(clickhouse.DefaultWriterConfig(), dsn, nil, nil)
	go func() { _ = w.Run(ctx) }()
	sender, _ := alerting.New(alerting.Config{Alertmanagers: []string{"http://" + amAddr}, ResendInterval: 10 * time.Second}, nil, nil)

	var mu sync.Mutex
	injected := map[string]time.Time{} // workload → arrival
	byID := map[string]string{}        // finding ID → workload, until measured
	measured := map[string]bool{}
	var latencies []time.Duration
	sender.OnDelivered(func(ids []string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if wl, ok := byID[id]; ok {
				latencies = append(latencies, at.Sub(injected[wl]))
				delete(byID, id)
			}
		}
	})
	findings := analyze.FindingFunc(func(f schema.Finding) {
		if f.Detector == analyze.DetectorMetadataAccess && f.Status == schema.FindingOpen {
			mu.Lock()
			if _, seen := injected[f.Workload]; seen && !measured[f.ID] {
				byID[f.ID] = f.Workload
				measured[f.ID] = true
			}
			mu.Unlock()
		}
		sender.Finding(f)
	})
	eng, _ := analyze.NewEngine(analyze.DefaultConfig(), findings, nil)
	go func() { _ = sender.Run(ctx) }()
	sink := ingest.Fanout{w, eng}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		sent := 0
		probes := 0
		for time.Since(start) < 8*time.Second {
			now := time.Now()
			want := int(now.Sub(start).Seconds() * rate)
			batch := make([]schema.Flow, 0, want-sent+1)
			for ; sent < want; sent++ {
				f := background[sent%len(background)]
				f.Time = now
				batch = append(batch, f)
			}
			if now.Sub(start) > time.Duration(probes)*100*time.Millisecond {
				probe := background[0]
				probe.Time, probe.IsReply = now, false
				probe.Src = schema.Endpoint{Namespace: "bench", Pod: fmt.Sprintf("probe-%d-%d", i, probes), Workload: fmt.Sprintf("probe-%d-%d", i, probes), WorkloadKind: "Deployment"}
				probe.DstIP = netipMetadata
				mu.Lock()
				injected[probe.Src.Workload] = time.Now()
				mu.Unlock()
				batch = append(batch, probe)
				probes++
			}
			if err := sink.Write(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "flows/s")
	}
	b.StopTimer()
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(latencies) < 10 {
		b.Fatalf("only %d alerts measured", len(latencies))
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(latencies)), "alerts")
}

var netipMetadata = netip.MustParseAddr("169.254.169.254")
