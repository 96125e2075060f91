package hubble

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func benchLines(b *testing.B) ([][]byte, int64) {
	var lines [][]byte
	var n int64
	for _, ls := range sampleLines(b) {
		for _, l := range ls {
			lines = append(lines, l)
			n += int64(len(l))
		}
	}
	return lines, n
}

// BenchmarkDecode compares the fast decoder (JSON line → schema.Flow) with
// protojson.Unmarshal of the same lines into GetFlowsResponse (which does not
// even convert to schema.Flow), on one core, in the same run.
func BenchmarkDecode(b *testing.B) {
	lines, size := benchLines(b)
	d := NewDecoder()
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	var fast, slow time.Duration
	b.SetBytes(size / int64(len(lines)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line := lines[i%len(lines)]
		t0 := time.Now()
		if _, err := d.Decode(line); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var resp observer.GetFlowsResponse
		if err := opts.Unmarshal(line, &resp); err != nil {
			b.Fatal(err)
		}
		fast += t1.Sub(t0)
		slow += time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/fast.Seconds(), "fast-flows/s")
	b.ReportMetric(float64(b.N)/slow.Seconds(), "protojson-flows/s")
	b.ReportMetric(slow.Seconds()/fast.Seconds(), "speedup-x")
}

// BenchmarkFileToClickHouse compares the whole ingest path (read a Hubble
// exporter file, decode, batch, insert over the native protocol into the
// flows table with its rollups) with ClickHouse's own bulk path for the same
// bytes: INSERT ... FORMAT JSONEachRow over HTTP into a table that stores
// each flow object as a string. Both run against the same server, alternately.
// ratio-x compares wall times; on a shared machine it follows the load of
// the moment, so with the embedded server the benchmark also reports the
// CPU time each side costs per row, this process and the server together
// (cpu-ratio-x: ClickHouse's over flowwarden's).
func BenchmarkFileToClickHouse(b *testing.B) {
	lines, _ := benchLines(b)
	const rows = 100000
	var buf bytes.Buffer
	for i := 0; i < rows; i++ {
		buf.Write(lines[i%len(lines)])
		buf.WriteByte('\n')
	}
	path := filepath.Join(b.TempDir(), "flows.json")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	dsn, db := chtest.Database(b)
	_, httpAddr := chtest.Server(b)
	ctx := context.Background()
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := clickhouse.Migrate(ctx, conn, clickhouse.SchemaConfig{}, nil); err != nil {
		b.Fatal(err)
	}
	if err := chtest.Exec(httpAddr, "CREATE TABLE "+db+".hubble_raw (flow String, node_name LowCardinality(String), time DateTime64(9, 'UTC')) ENGINE = MergeTree ORDER BY time"); err != nil {
		b.Fatal(err)
	}
	// Background merges of earlier iterations' parts would land on whichever
	// insert runs next; both sides are measured without them.
	for _, t := range []string{"flows", "edges_5m", "edges_1d", "hubble_raw"} {
		if err := chtest.Exec(httpAddr, "SYSTEM STOP MERGES "+db+"."+t); err != nil {
			b.Fatal(err)
		}
	}
	for _, q := range strings.Fields(os.Getenv("FW_BENCH_SQL")) {
		if err := chtest.Exec(httpAddr, strings.ReplaceAll(strings.ReplaceAll(q, "DB", db), "+", " ")); err != nil {
			b.Fatal(err)
		}
	}
	insertURL := chtest.URL(httpAddr) + "/?query=" + "INSERT+INTO+" + db + ".hubble_raw+SETTINGS+input_format_json_read_objects_as_strings%3D1+FORMAT+JSONEachRow"

	var ours, theirs time.Duration
	var oursCPU, theirsCPU, oursServer, theirsServer float64
	serverPID := 0
	if s := chtest.Embedded(b); s != nil {
		serverPID = s.PID()
	}
	cpuNow := func() (total, server float64) {
		server = procCPU(b, serverPID)
		return selfCPU(b) + server, server
	}
	metrics := clickhouse.NewWriterMetrics(nil)
	// The writer as flowwarden ingest configures it.
	wcfg := clickhouse.ImportWriterConfig()
	if n, err := strconv.Atoi(os.Getenv("FW_BENCH_BATCH")); err == nil {
		wcfg.BatchSize = n
	}
	// FW_BENCH_DAYS sets WriterConfig.DayBatches (0: batches by lane, each
	// spanning the days its rows fall on).
	if n, err := strconv.Atoi(os.Getenv("FW_BENCH_DAYS")); err == nil {
		wcfg.DayBatches = n
	}
	b.SetBytes(int64(buf.Len()))
	// Each benchmark iteration alternates the two sides three times, so one
	// run gives a ratio over several rounds on this noisy machine.
	const rounds = 3
	// FW_BENCH_CPUPROFILE profiles the measured rounds only (go test's
	// -cpuprofile also covers building the 140 MB input).
	if path := os.Getenv("FW_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	for i := 0; i < b.N*rounds; i++ {
		c0, s0 := cpuNow()
		t0 := time.Now()
		w, err := clickhouse.NewWriter(wcfg, dsn, metrics, nil)
		if err != nil {
			b.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		var stats ingest.Stats
		if err := ReadFile(ctx, path, 2, w, &stats); err != nil {
			b.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if stats.Snapshot().Accepted != rows {
			b.Fatalf("accepted %s", stats.Snapshot())
		}
		t1 := time.Now()
		c1, s1 := cpuNow()
		resp, err := http.Post(insertURL, "application/json", bytes.NewReader(buf.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("JSONEachRow insert: %s", resp.Status)
		}
		ours += t1.Sub(t0)
		theirs += time.Since(t1)
		c2, s2 := cpuNow()
		oursCPU += c1 - c0
		theirsCPU += c2 - c1
		oursServer += s1 - s0
		theirsServer += s2 - s1
	}
	var n, m uint64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM flows), (SELECT count() FROM hubble_raw)").Scan(&n, &m); err != nil {
		b.Fatal(err)
	}
	if n != uint64(rows*b.N*rounds) || m != n {
		b.Fatalf("rows: flows %d, hubble_raw %d, want %d", n, m, rows*b.N*rounds)
	}
	// Parts written (merges are stopped): of flows per insert, and of flows
	// and the rollups per 100,000 rows.
	var flowParts, allParts uint64
	if err := conn.QueryRow(ctx, "SELECT countIf(table = 'flows'), count() FROM system.parts WHERE database = currentDatabase() AND active AND table IN ('flows', 'edges_5m', 'edges_1d')").Scan(&flowParts, &allParts); err != nil {
		b.Fatal(err)
	}
	{
		var m dto.Metric
		_ = metrics.InsertSeconds.(prometheus.Metric).Write(&m)
		b.ReportMetric(float64(flowParts)/float64(m.GetHistogram().GetSampleCount()), "flows-parts/insert")
		b.ReportMetric(float64(m.GetHistogram().GetSampleCount())*float64(rows)/float64(n), "inserts/100k-rows")
		b.ReportMetric(float64(allParts)*float64(rows)/float64(n), "parts/100k-rows")
	}
	if os.Getenv("FW_BENCH_DEBUG") != "" {
		var m dto.Metric
		_ = metrics.InsertSeconds.(prometheus.Metric).Write(&m)
		b.Logf("inserts: %d taking %.2fs in all", m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum())
		// The parts written (merges are stopped), by table and format.
		resp, _ := http.Post(chtest.URL(httpAddr)+"/", "text/plain", strings.NewReader("SELECT table, part_type, count(), sum(rows), formatReadableSize(sum(data_uncompressed_bytes)), formatReadableSize(sum(data_compressed_bytes)) FROM system.parts WHERE database = '"+db+"' AND active GROUP BY ALL FORMAT PrettyCompact"))
		out, _ := io.ReadAll(resp.Body)
		b.Log("\n" + string(out))
	}
	b.ReportMetric(float64(rows*b.N*rounds)/ours.Seconds(), "flowwarden-rows/s")
	b.ReportMetric(float64(rows*b.N*rounds)/theirs.Seconds(), "jsoneachrow-rows/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio-x")
	if serverPID != 0 {
		b.ReportMetric(oursCPU*1e6/float64(rows*b.N*rounds), "flowwarden-cpu-us/row")
		b.ReportMetric(theirsCPU*1e6/float64(rows*b.N*rounds), "jsoneachrow-cpu-us/row")
		b.ReportMetric(theirsCPU/oursCPU, "cpu-ratio-x")
		// The server's share of each.
		b.ReportMetric(oursServer*1e6/float64(rows*b.N*rounds), "flowwarden-server-cpu-us/row")
		b.ReportMetric(theirsServer*1e6/float64(rows*b.N*rounds), "jsoneachrow-server-cpu-us/row")
	}
	_ = fmt.Sprint
}

// selfCPU is this process's user+system CPU-seconds so far.
func selfCPU(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// procCPU is process pid's user+system CPU-seconds so far (0 for pid 0).
func procCPU(b *testing.B, pid int) float64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 a second).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}
