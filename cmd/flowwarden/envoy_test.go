package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/ingest/envoy"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// TestEnvoyJoinsHubble ingests Hubble flows and an Istio access log of the
// same pods: the Envoy flows are attributed from the Hubble-learned identity
// cache and one SQL query answers "which requests did this pod make" from
// both views.
func TestEnvoyJoinsHubble(t *testing.T) {
	dsn, _ := chtest.Database(t)
	// productpage-v1-6b746f74dc-ffh56 (10.156.2.8) calls reviews-v1 (10.156.0.10:9080) in the samples.
	log := strings.Join([]string{
		`[2021-10-04T14:31:02.100Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 295 7 6 "-" "python-requests/2.21.0" "6f1f7d4c-1" "reviews:9080" "10.156.0.10:9080" outbound|9080||reviews.bookinfo.svc.cluster.local 10.156.2.8:40112 10.0.3.17:9080 10.156.2.8:40110 - default`,
		`[2021-10-04T14:31:05.400Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 295 9 8 "-" "python-requests/2.21.0" "6f1f7d4c-2" "reviews:9080" "10.156.0.10:9080" outbound|9080||reviews.bookinfo.svc.cluster.local 10.156.2.8:40116 10.0.3.17:9080 10.156.2.8:40114 - default`,
		`{"start_time":"2021-10-04T14:31:07.000Z","method":"GET","path":"/reviews/1","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,"bytes_sent":301,"duration":5,"upstream_host":"10.156.0.10:9080","upstream_cluster":"outbound|9080||reviews.bookinfo.svc.cluster.local","downstream_remote_address":"10.156.2.8:40118","downstream_local_address":"10.0.3.17:9080","authority":"reviews:9080"}`,
	}, "\n")
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, []byte(log+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--log-level", "warn",
		"--hubble-file", "../../testdata/hubble/basic-sample-348-http-flows.json", "--envoy-file", path)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	res, err := run(t, "query", "--clickhouse", dsn, "--format", "csv", "--log-level", "warn", `
		SELECT source, count() AS flows, countIf(http_path = '/reviews/0') AS reviews0
		FROM flows
		WHERE src_pod = 'productpage-v1-6b746f74dc-ffh56' AND dst_workload = 'reviews-v1' AND NOT is_reply
		GROUP BY source ORDER BY source`)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(res), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "envoy,3,2") || !strings.HasPrefix(lines[2], "hubble,") {
		t.Fatalf("want one row per view (envoy: 3 requests, 2 to /reviews/0; hubble), got:\n%s", res)
	}
}

// TestServeFollowsEnvoyLog runs serve on an access log that grows while it
// runs: the lines land as envoy flows, counted in /metrics.
func TestServeFollowsEnvoyLog(t *testing.T) {
	dsn, _ := chtest.Database(t)
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	listen := amtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done, _ := runInBackground(ctx, "serve", "--clickhouse", dsn, "--envoy-file", path, "--listen", listen, "--data-dir", t.TempDir(),
		"--flush-interval", "200ms", "--flows-ttl", "0", "--log-level", "warn")
	// The first start follows from the end: write once serve is up (its
	// page answers after the sources started), not after a guessed delay.
	waitUntil(t, 60*time.Second, "serve to answer", func() bool {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	time.Sleep(500 * time.Millisecond)
	sample, err := os.ReadFile("../../testdata/istio-envoy/istio-text-accesslog-official-docs.log")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write(sample)
	f.Close()
	waitUntil(t, 60*time.Second, "the followed lines in ClickHouse", func() bool { n, _ := countFlows(t, dsn); return n == 2 })
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `flowwarden_ingest_records_total{outcome="accepted",source="envoy"} 2`) {
		t.Errorf("envoy lines not counted in /metrics")
	}
	// The page's mTLS coverage comes from the detectors' count: with no
	// Hubble identities the inbound line names no namespace, so none.
	resp, err = http.Get("http://" + listen + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `id="mtls-coverage"`) || !strings.Contains(string(body), `id="no-mesh"`) {
		t.Errorf("the page's mTLS coverage is not the detectors' (no section, or not counted)")
	}

	// Stopped while the log still grows: the follower stops before the
	// writer does, so serve ends cleanly (it once stopped the writer first,
	// and the follower's next write failed the run with "writer is stopped").
	stopWriting, wrote := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(wrote)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		chunk := bytes.Repeat(sample, 100)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); { // bounded
			select {
			case <-stopWriting:
				return
			case <-time.After(5 * time.Millisecond):
				_, _ = f.Write(chunk)
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	cancel()
	err = <-done
	close(stopWriting)
	<-wrote
	if err != nil {
		t.Fatalf("serve stopped while the log grew: %v", err)
	}
	if n, _ := countFlows(t, dsn); n <= 2 {
		t.Errorf("%d flows stored: the growing log was not followed", n)
	}
}

// TestServeOnTheEmbeddedDefaultStoresEverythingBeforeStopping runs serve
// with no --clickhouse (the embedded default, as `make run` does) and a
// flush interval longer than the run: the flows are written by the final
// flush at shutdown, which must happen before the embedded ClickHouse
// stops (it once stopped first, and the flush failed until the spool was
// replayed on the next start).
func TestServeOnTheEmbeddedDefaultStoresEverythingBeforeStopping(t *testing.T) {
	dataDir := t.TempDir()
	listen := amtest.FreeAddr(t)
	accessLog := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(accessLog, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, logs := runInBackground(ctx, "serve", "--data-dir", dataDir, "--envoy-file", accessLog,
		"--listen", listen, "--flush-interval", "1h", "--flows-ttl", "0", "--log-level", "info")
	// Followed like tail -F: the lines arrive once serve runs.
	waitUntil(t, 60*time.Second, "serve to listen", func() bool {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	sample, err := os.ReadFile("../../testdata/istio-envoy/istio-text-accesslog-official-docs.log")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(accessLog, sample, 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "serve to accept the access log's lines", func() bool {
		resp, err := http.Get("http://" + listen + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `flowwarden_ingest_records_total{outcome="accepted",source="envoy"} 2`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	if strings.Contains(logs.String(), "insert failed") {
		t.Errorf("the final flush failed:\n%s", logs.String())
	}
	// A new process on the same data directory (its own embedded server,
	// and no spool replay: query does not read the spool).
	out, err := run(t, "query", "--data-dir", dataDir, "--log-level", "warn", "SELECT count() FROM flows WHERE source = 'envoy'")
	if err != nil || !strings.Contains(out, "\n2\n") {
		t.Fatalf("after serve stopped, the store holds: %v\n%s", err, out)
	}
}

// TestServeReadsWhatTheLogGotWhileStopped: lines written to a followed
// access log while serve was stopped are stored when it starts again with
// the same data directory, once.
func TestServeReadsWhatTheLogGotWhileStopped(t *testing.T) {
	dsn, _ := chtest.Database(t)
	dataDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "istio-proxy.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../../testdata/istio-envoy/istio-text-accesslog-official-docs.log")
	if err != nil {
		t.Fatal(err)
	}
	appendSample := func() {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(sample); err != nil {
			t.Fatal(err)
		}
	}
	serve := func(while func(), want uint64) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--envoy-file", path, "--listen", amtest.FreeAddr(t),
			"--data-dir", dataDir, "--flush-interval", "200ms", "--flows-ttl", "0", "--log-level", "warn")
		// A new log is followed from its end: append only once the
		// follower has opened it (it keeps that position at once).
		waitUntil(t, 60*time.Second, "the follower's position", func() bool {
			b, _ := os.ReadFile(filepath.Join(dataDir, envoy.PositionsFile))
			return bytes.Contains(b, []byte(path))
		})
		if while != nil {
			while()
		}
		waitUntil(t, 60*time.Second, fmt.Sprintf("%d envoy flows in ClickHouse", want), func() bool { n, _ := countFlows(t, dsn); return n >= want })
		time.Sleep(500 * time.Millisecond) // a repeat would land now
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v\n%s", err, logs)
		}
		if n, _ := countFlows(t, dsn); n != want {
			t.Errorf("%d flows stored, want %d", n, want)
		}
	}
	serve(appendSample, 2)
	appendSample() // while serve is stopped
	serve(nil, 4)
}
