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
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// BenchmarkSoak measures serve's live path against the file import, in
// one run:
//
//  1. Saturation: the replay server (Hubble's observer API, in this
//     process) streams the Hubble samples, looped and re-timed to now, at
//     FW_SOAK_RATE flows/s (default 200,000: more than serve takes here)
//     into a separate serve process (spool, detectors, identity cache: all
//     on) for FW_SOAK_DURATION (default 60 s). Reported: the rate stored in
//     ClickHouse over the run after a warm-up (count() at both ends, so the
//     drain at shutdown is not counted), and, over the same window, the
//     flows stored per CPU-second of serve's own process (from
//     /proc/<pid>/stat) and the replay's CPU per flow sent (this process's
//     rusage: the replay is all that runs in it then).
//  2. Baseline, just before and just after 1: the plain file import (the
//     ingest command, in this process) of the same samples, 200,000 flows,
//     into a fresh database. soak/file-ratio is 1's stored rate over the
//     mean of the two import rates; soak/file-CPU-ratio is serve's flows
//     per CPU-second over the import's (the cost per flow of the live
//     path, spool and detectors included, against the import's;
//     ClickHouse's CPU is in neither).
//  3. Load: a fresh serve at 80% of the rate stored in 1 for the same
//     duration: the p99 of serve's ingest-latency histogram (per inserted
//     batch, its oldest flow's event time to the insert's acknowledgement:
//     an upper bound for every flow of the batch, the spool's 2 s seal
//     interval included), serve's peak RSS (VmHWM) and the rate stored.
//
// Everything shares the machine's cores: serve, the replay, and the
// embedded ClickHouse (which serves 1, 2 and 3). In production Hubble
// Relay runs elsewhere; here the replay's CPU is taken from serve's share,
// which is why it sends pre-marshalled messages (its CPU per flow is
// reported), and why flows per serve CPU-second is the figure that
// compares across runs on a busy machine, while soak/file-ratio compares
// the two paths within one run.
//
// FW_PROFILE_DIR=dir makes each serve child write CPU, blocking, mutex and
// allocation profiles under dir/saturation and dir/load.
func BenchmarkSoak(b *testing.B) {
	duration := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("FW_SOAK_DURATION")); err == nil {
		duration = d
	}
	rate := 200000.0
	if r, err := strconv.ParseFloat(os.Getenv("FW_SOAK_RATE"), 64); err == nil {
		rate = r
	}
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	for i := 0; i < b.N; i++ {
		// The import runs just before and just after the saturation phase,
		// and the ratio takes their mean: on a shared machine one short
		// import can fall into a quiet or a busy moment.
		fileBefore, fileCPUBefore := fileImport(b, files)
		sat := soakPhase(b, files, rate, duration, "saturation")
		fileAfter, fileCPUAfter := fileImport(b, files)
		fileRate, fileCPU := (fileBefore+fileAfter)/2, (fileCPUBefore+fileCPUAfter)/2
		b.Logf("file import: %.0f flows/s before, %.0f after; %.0f and %.0f flows per CPU-second", fileBefore, fileAfter, fileCPUBefore, fileCPUAfter)
		b.ReportMetric(rate, "offered-flows/s")
		b.ReportMetric(sat.stored, "stored-flows/s")
		b.ReportMetric(fileRate, "file-ingest-flows/s")
		b.ReportMetric(sat.stored/fileRate, "soak/file-ratio")
		b.ReportMetric(fileCPU, "file-flows/ingest-CPU-s")
		if sat.serveCPU > 0 {
			perCPU := sat.stored * sat.window.Seconds() / sat.serveCPU
			b.ReportMetric(perCPU, "stored-flows/serve-CPU-s")
			// The same ratio per CPU-second: what each path costs per
			// flow, whatever share of the cores it got.
			b.ReportMetric(perCPU/fileCPU, "soak/file-CPU-ratio")
		}
		if sat.served > 0 {
			b.ReportMetric(sat.replayCPU/float64(sat.served)*1e6, "replay-CPU-µs/flow")
		}
		b.ReportMetric(float64(sat.peakRSS)/(1<<20), "peak-RSS-MiB")

		load := soakPhase(b, files, 0.8*sat.stored, duration, "load")
		b.ReportMetric(0.8*sat.stored, "load-offered-flows/s")
		b.ReportMetric(load.stored, "load-stored-flows/s")
		b.ReportMetric(load.p99, "load-p99-latency-s")
		b.ReportMetric(float64(load.peakRSS)/(1<<20), "load-peak-RSS-MiB")
	}
}

// fileImport is the baseline: the same samples, 200,000 flows, from a file
// with the ingest command (in this process) into a fresh database; its
// rate, and its flows per CPU-second of this process.
func fileImport(b *testing.B, files []string) (rate, perCPU float64) {
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
	dsn, _ := chtest.Database(b)
	start, cpu0 := time.Now(), selfCPU()
	out, err := runB(b, "ingest", "--clickhouse", dsn, "--flows-ttl", "0", "--hubble-file", path, "--log-level", "warn")
	if err != nil {
		b.Fatalf("ingest: %v\n%s", err, out)
	}
	ingested := float64(countRows(b, dsn))
	rate = ingested / time.Since(start).Seconds()
	if cpu := selfCPU() - cpu0; cpu > 0 {
		perCPU = ingested / cpu
	}
	return rate, perCPU
}

// soakResult is what one serve run measured.
type soakResult struct {
	stored    float64       // flows/s stored over the window
	window    time.Duration // after the warm-up
	serveCPU  float64       // serve's CPU-seconds over the window
	replayCPU float64       // this process's CPU-seconds over the window
	served    int64         // flows the replay sent over the window
	p99       float64       // ingest latency, whole run
	peakRSS   int64
}

// soakPhase runs the replay at rate into a fresh serve and database for
// duration and measures after a warm-up of a sixth of it.
func soakPhase(b *testing.B, files []string, rate float64, duration time.Duration, name string) soakResult {
	dsn, _ := chtest.Database(b)
	replay, err := hubble.NewReplay(hubble.ReplayConfig{Files: files, Listen: "127.0.0.1:0", Rate: rate, Loop: true, ShiftToNow: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := replay.Listen(); err != nil {
		b.Fatal(err)
	}
	stopReplay := make(chan struct{})
	replayDone := make(chan struct{})
	go func() { defer close(replayDone); _ = replay.Run(ctxUntil(stopReplay)) }()
	defer func() { close(stopReplay); <-replayDone }()
	listen := amtest.FreeAddr(b)
	args, _ := json.Marshal([]string{"serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", listen,
		"--data-dir", b.TempDir(), "--log-level", "warn", "--flows-ttl", "0"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FLOWWARDEN_TEST_RUN_CLI="+string(args))
	if dir := os.Getenv("FW_PROFILE_DIR"); dir != "" {
		_ = os.MkdirAll(filepath.Join(dir, name), 0o755)
		cmd.Env = append(cmd.Env, "FW_PROFILE_DIR="+filepath.Join(dir, name))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	warm := duration / 6
	time.Sleep(warm)
	rows0, t0, serve0, self0, sent0 := countRows(b, dsn), time.Now(), procCPU(cmd.Process.Pid), selfCPU(), replay.Served()
	time.Sleep(duration - warm)
	rows1, t1, serve1, self1, sent1 := countRows(b, dsn), time.Now(), procCPU(cmd.Process.Pid), selfCPU(), replay.Served()
	res := soakResult{
		window: t1.Sub(t0), serveCPU: serve1 - serve0, replayCPU: self1 - self0, served: sent1 - sent0,
		peakRSS: vmHWM(cmd.Process.Pid),
	}
	res.stored = float64(rows1-rows0) / res.window.Seconds()
	res.p99 = histogramQuantile(scrape(b, "http://"+listen+"/metrics"), "flowwarden_ingest_latency_seconds", 0.99)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	b.Logf("%s: offered %.0f flows/s, stored %.0f/s over %s, serve CPU %.1f s, replay CPU %.1f s for %d flows, p99 %.2g s, peak RSS %d MiB",
		name, rate, res.stored, res.window.Round(time.Second), res.serveCPU, res.replayCPU, res.served, res.p99, res.peakRSS>>20)
	return res
}

// countRows is count() of the flows table (cheap: from the parts' metadata).
func countRows(b *testing.B, dsn string) uint64 {
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM flows").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// procCPU is a process's user+system CPU-seconds so far (/proc/<pid>/stat,
// in clock ticks of 1/100 s).
func procCPU(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	_, rest, _ := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// selfCPU is this process's user+system CPU-seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
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
