package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// gauge reads one unlabelled gauge from serve's /metrics (expfmt, not
// string matching); ok is false while it is absent.
func gauge(t *testing.T, listen, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	f := fams[name]
	if f == nil || len(f.GetMetric()) != 1 {
		return 0, false
	}
	return f.GetMetric()[0].GetGauge().GetValue(), true
}

// TestServeEnvoyOnlyClosesWindowsWhileQuiet: serve with only --envoy-file
// (no Hubble observer) closes the detectors' windows on the engine's own
// wall clock while no new flows arrive: after two live access-log lines
// and silence, the windows close past the lines' time and keep following
// the wall clock. (advanceOnWallClock once read the Hubble observer's last
// flow time, so without --hubble the windows stayed where the last flow
// left them and findings could not resolve until new flows came.)
func TestServeEnvoyOnlyClosesWindowsWhileQuiet(t *testing.T) {
	dsn, _ := chtest.Database(t)
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	listen := amtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--envoy-file", path, "--listen", listen, "--data-dir", t.TempDir(),
		"--flush-interval", "200ms", "--flows-ttl", "0", "--log-level", "warn")
	const closed = "flowwarden_detector_windows_closed_until_seconds"
	waitUntil(t, 30*time.Second, "serve's /metrics", func() bool { _, err := http.Get("http://" + listen + "/metrics"); return err == nil })

	at := time.Now().UTC()
	line := fmt.Sprintf(`[%s] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`+"\n",
		at.Format("2006-01-02T15:04:05.000Z"))
	if err := os.WriteFile(path, []byte(line+line), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the lines in ClickHouse", func() bool { n, _ := countFlows(t, dsn); return n == 2 })
	// No more lines. The flows alone close windows only up to their time
	// minus the lateness (5 s); the engine's clock closes them past it.
	waitUntil(t, 40*time.Second, "windows closed past the last flow on the wall clock", func() bool {
		v, ok := gauge(t, listen, closed)
		return ok && v > float64(at.Unix())+1
	})
	first, _ := gauge(t, listen, closed)
	waitUntil(t, 40*time.Second, "windows to keep closing while quiet", func() bool {
		v, _ := gauge(t, listen, closed)
		return v > first
	})
	if n, _ := countFlows(t, dsn); n != 2 {
		t.Fatalf("%d flows stored, want the 2 lines only", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
}
