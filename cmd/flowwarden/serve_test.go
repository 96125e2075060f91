package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// syncBuffer is a bytes.Buffer safe for the serve goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeDetectsAndPages runs the whole live path: the replay server
// streams the metadata-probe scenario over gRPC, serve stores the flows,
// runs the detectors, stores the finding and pages through a real
// Alertmanager to a webhook.
func TestServeDetectsAndPages(t *testing.T) {
	hook := &amtest.Webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	amAddr := amtest.FreeAddr(t)
	amtest.Start(t, hs.URL, amAddr, t.TempDir())

	file := filepath.Join(scenarioDir, "metadata-probe.jsonl.gz")
	replay := startReplay(t, hubble.ReplayConfig{Files: []string{file}, Rate: 5000, ShiftToNow: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dsn, _ := chtest.Database(t)
	listen := amtest.FreeAddr(t)
	serveCtx, stopServe := context.WithCancel(ctx)
	serveDone, logs := runInBackground(serveCtx, "serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", listen,
		"--alertmanager", "http://"+amAddr, "--cluster", "test", "--alert-resend-interval", "1s",
		"--flush-interval", "200ms", "--log-level", "warn", "--data-dir", t.TempDir())

	amtest.WaitFor(t, 30*time.Second, "the metadata-access page", func() bool {
		_, _, ok := hook.Find("FlowwardenMetadataAccess", "firing")
		return ok
	})
	labels, ann, _ := hook.Find("FlowwardenMetadataAccess", "firing")
	if labels["namespace"] != "bookinfo" || labels["workload"] != "productpage-v1" || labels["severity"] != "critical" || labels["cluster"] != "test" {
		t.Errorf("labels %v", labels)
	}
	if !strings.Contains(ann["query"], "169.254.169.254") {
		t.Errorf("query annotation %q does not look for the metadata address", ann["query"])
	}
	amtest.WaitFor(t, 30*time.Second, "every replayed flow to be accepted", func() bool {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct {
			Accepted int `json:"flows_accepted"`
		}
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Accepted >= replay.Len()
	})
	time.Sleep(500 * time.Millisecond) // one flush interval and more
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	_, _ = metrics.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`flowwarden_findings_total{detector="metadata-access",severity="critical"} 1`, "flowwarden_alerts_sent_total", "flowwarden_flows_written_total", `flowwarden_build_info{commit=`} {
		if !strings.Contains(metrics.String(), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	stopServe()
	if err := <-serveDone; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var flows, findings uint64
	if err := conn.QueryRow(context.Background(), "SELECT (SELECT count() FROM flows), (SELECT count() FROM findings FINAL WHERE detector = 'metadata-access')").Scan(&flows, &findings); err != nil {
		t.Fatal(err)
	}
	if flows != uint64(replay.Len()) || findings != 1 {
		t.Fatalf("stored %d flows (want %d) and %d metadata findings (want 1)", flows, replay.Len(), findings)
	}
}
