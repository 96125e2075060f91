package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// BenchmarkSoak streams the Hubble samples (looped, re-timed to now) from
// the replay server into a separate serve process (spool, detectors, all
// on) for FW_SOAK_DURATION (default 3m) at FW_SOAK_RATE flows/s (default
// 20000), then reports the rate stored, the p99 of the ingest-latency
// histogram, serve's peak RSS and the flows stored per CPU-second serve
// used; and, as the baseline, the plain file-ingest rate of the same flows
// in the same run. FW_PROFILE_DIR=dir makes serve write CPU, blocking and
// mutex profiles there.
func BenchmarkSoak(b *testing.B) {
	duration := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("FW_SOAK_DURATION")); err == nil {
		duration = d
	}
	rate := 20000.0
	if r, err := strconv.ParseFloat(os.Getenv("FW_SOAK_RATE"), 64); err == nil {
		rate = r
	}
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	for i := 0; i < b.N; i++ {
		dsn, _ := chtest.Database(b)
		replay, err := hubble.NewReplay(hubble.ReplayConfig{Files: files, Listen: "127.0.0.1:0", Rate: rate, Loop: true, ShiftToNow: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := replay.Listen(); err != nil {
			b.Fatal(err)
		}
		stopReplay := make(chan struct{})
		go func() { _ = replay.Run(ctxUntil(stopReplay)) }()
		listen := amtest.FreeAddr(b)
		args, _ := json.Marshal([]string{"serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", listen,
			"--data-dir", b.TempDir(), "--log-level", "warn", "--flows-ttl", "0"})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FLOWWARDEN_TEST_RUN_CLI="+string(args))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(duration)
		peakRSS := vmHWM(cmd.Process.Pid)
		metrics := scrape(b, "http://"+listen+"/metrics")
		close(stopReplay)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		// All of serve's CPU, its final drain of the spool included.
		cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		rows, _ := countFlowsB(b, dsn)
		b.ReportMetric(float64(rows)/duration.Seconds(), "stored-flows/s")
		b.ReportMetric(rate, "offered-flows/s")
		b.ReportMetric(histogramQuantile(metrics, "flowwarden_ingest_latency_seconds", 0.99), "p99-latency-s")
		b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
		// On a shared machine serve gets whatever CPU is left: stored flows
		// per CPU-second serve used is the figure that compares across runs.
		if cpu > 0 {
			b.ReportMetric(float64(rows)/cpu, "stored-flows/serve-CPU-s")
		}

		// Baseline: the same flows from a file with the ingest command.
		var buf bytes.Buffer
		for n := 0; n < 200000; {
			for _, f := range files {
				raw, _ := os.ReadFile(f)
				buf.Write(raw)
				n += bytes.Count(raw, []byte("\n"))
			}
		}
		path := filepath.Join(b.TempDir(), "flows.json")
		_ = os.WriteFile(path, buf.Bytes(), 0o600)
		dsn2, _ := chtest.Database(b)
		start := time.Now()
		out, err := runB(b, "ingest", "--clickhouse", dsn2, "--flows-ttl", "0", "--hubble-file", path, "--log-level", "warn")
		if err != nil {
			b.Fatalf("ingest: %v\n%s", err, out)
		}
		ingested, _ := countFlowsB(b, dsn2)
		fileRate := float64(ingested) / time.Since(start).Seconds()
		b.ReportMetric(fileRate, "file-ingest-flows/s")
		b.ReportMetric(float64(rows)/duration.Seconds()/fileRate, "soak/file-ratio")
	}
}

func vmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmHWM:") {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(sc.Text(), "VmHWM:"), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

func scrape(b *testing.B, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return buf.String()
}

// histogramQuantile estimates a quantile from a Prometheus text histogram
// (upper bound of the bucket that reaches it).
func histogramQuantile(text, name string, q float64) float64 {
	type bucket struct {
		le    float64
		count float64
	}
	var buckets []bucket
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"_bucket{le=\"") {
			continue
		}
		rest := strings.TrimPrefix(line, name+"_bucket{le=\"")
		leS, countS, _ := strings.Cut(rest, "\"} ")
		le, err := strconv.ParseFloat(leS, 64)
		if leS == "+Inf" {
			le, err = -1, nil
		}
		c, err2 := strconv.ParseFloat(countS, 64)
		if err == nil && err2 == nil {
			buckets = append(buckets, bucket{le, c})
		}
	}
	if len(buckets) == 0 {
		return -1
	}
	total := buckets[len(buckets)-1].count
	for _, bk := range buckets {
		if bk.count >= q*total {
			return bk.le
		}
	}
	return -1
}

// ctxUntil is a context that ends when stop is closed.
func ctxUntil(stop <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	return ctx
}
