package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/ingest/netnstest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

func TestMain(m *testing.M) {
	hostfw.RunGuardIfRequested() // enforce --host --apply re-executes the binary as its guard
	// The fault tests run the CLI as a separate process (so that it can be
	// killed with SIGKILL): the test binary then acts as flowwarden.
	if args := os.Getenv("FLOWWARDEN_TEST_RUN_CLI"); args != "" {
		embedded.RunChildIfRequested()
		var argv []string
		_ = json.Unmarshal([]byte(args), &argv)
		cmd := newRootCommand()
		cmd.SetArgs(argv)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		stopProfiles := startChildProfiles()
		code := execute(ctx, cmd, os.Stderr) // main's exit statuses
		stop()
		stopProfiles()
		os.Exit(code)
	}
	if os.Getenv("FLOWWARDEN_NETNS_TRAFFIC") != "" {
		netnstest.Main(m) // generates traffic and exits
	}
	chtest.Main(m)
}

// startChildProfiles writes CPU, blocking and mutex profiles of a CLI child
// (serve in BenchmarkSoak) to FW_PROFILE_DIR when it is set; the returned
// function stops them and writes the files.
func startChildProfiles() func() {
	dir := os.Getenv("FW_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return func() {}
	}
	_ = pprof.StartCPUProfile(cpu)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	runtime.SetMutexProfileFraction(10)
	return func() {
		pprof.StopCPUProfile()
		_ = cpu.Close()
		for _, name := range []string{"block", "mutex", "allocs"} {
			if f, err := os.Create(filepath.Join(dir, name+".pprof")); err == nil {
				_ = pprof.Lookup(name).WriteTo(f, 0)
				_ = f.Close()
			}
		}
	}
}

// run executes the CLI in-process and returns its standard output.
func run(t *testing.T, args ...string) (string, error) { return runB(t, args...) }

func runB(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// runInBackground executes the CLI in-process until it returns (serve:
// until ctx ends); its output goes to the returned buffer, which may be
// read while it runs, and its result to the channel.
func runInBackground(ctx context.Context, args ...string) (<-chan error, *syncBuffer) {
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		cmd := newRootCommand()
		cmd.SetOut(logs)
		cmd.SetErr(logs)
		cmd.SetArgs(args)
		done <- cmd.ExecuteContext(ctx)
	}()
	return done, logs
}

// retimedSamples writes every sample flow with its times moved into the last
// minutes, in the original order, so that queries over "the last hour" see them.
func retimedSamples(t *testing.T) (string, int) {
	t.Helper()
	files, _ := filepath.Glob("../../testdata/hubble/*")
	var lines [][]byte
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) > 0 {
				lines = append(lines, append([]byte(nil), sc.Bytes()...))
			}
		}
		fh.Close()
	}
	start := time.Now().Add(-10 * time.Minute)
	var buf bytes.Buffer
	for i, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal(l, &obj); err != nil {
			t.Fatal(err)
		}
		ts := start.Add(time.Duration(i) * time.Millisecond).UTC().Format(time.RFC3339Nano)
		obj["time"] = ts
		obj["flow"].(map[string]any)["time"] = ts
		b, _ := json.Marshal(obj)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "samples.json")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, len(lines)
}

var sqlBlock = regexp.MustCompile("(?s)```sql\n(.*?)```")

// TestReadmeQueries ingests the samples with the CLI and runs every SQL
// block of the README through `flowwarden query`.
func TestReadmeQueries(t *testing.T) {
	dsn, _ := chtest.Database(t)
	path, n := retimedSamples(t)
	out, err := run(t, "ingest", "--clickhouse", dsn, "--hubble-file", path, "--log-level", "warn")
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	if !strings.Contains(out, "total: "+strconv.Itoa(n)+" flows written, 0 lines rejected") {
		t.Fatalf("ingest summary does not report %d flows written:\n%s", n, out)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := sqlBlock.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 5 {
		t.Fatalf("README has %d SQL examples, want at least 5", len(blocks))
	}
	for _, b := range blocks {
		sql := b[1]
		out, err := run(t, "query", "--clickhouse", dsn, "--format", "json", "--log-level", "warn", sql)
		if err != nil {
			t.Errorf("README query failed: %v\n%s", err, sql)
			continue
		}
		rows := strings.Count(out, "\n")
		wantNone := strings.Contains(sql, "metadata")
		if wantNone && rows != 0 || !wantNone && rows == 0 {
			t.Errorf("README query returned %d rows:\n%s", rows, sql)
		}
	}
}

func TestQueryRefusesWrites(t *testing.T) {
	dsn, _ := chtest.Database(t)
	for _, sql := range []string{"DROP TABLE flows", "INSERT INTO flows (node) VALUES ('x')"} {
		if _, err := run(t, "query", "--clickhouse", dsn, sql); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("%q: got %v, want a read-only refusal", sql, err)
		}
	}
}

// TestConfigFileAndEnv: a flag not given on the command line takes its
// value from FLOWWARDEN_<FLAG>, else from the config file (lists as YAML
// sequences, one value each); the command line wins over both, the
// environment over the file; a key of another command's flag is ignored,
// one of no command's flag refused, as is a bad environment value.
func TestConfigFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fw.yaml")
	file := "log-level: warn\ndata-dir: /from-file\nflush-interval: 7s\nlisten: 127.0.0.1:1\n" +
		"alertmanager: [http://am-0:9093, http://am-1:9093]\nmin-flows: 5\n"
	if err := os.WriteFile(cfg, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	effective := func(args ...string) map[string]string {
		t.Helper()
		root := newRootCommand()
		cmd, rest, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Fatal(err)
		}
		if err := applyConfig(cmd, cfg); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		got := map[string]string{}
		for _, name := range []string{"log-level", "data-dir", "flush-interval", "listen", "alertmanager"} {
			f := cmd.Flags().Lookup(name)
			if f == nil {
				t.Fatalf("serve has no --%s", name)
			}
			got[name] = f.Value.String()
		}
		return got
	}
	want := map[string]string{"log-level": "warn", "data-dir": "/from-file", "flush-interval": "7s", "listen": "127.0.0.1:1",
		"alertmanager": "[http://am-0:9093,http://am-1:9093]"}
	if got := effective("serve"); !reflect.DeepEqual(got, want) {
		t.Fatalf("from the file (min-flows, recommend's, ignored by serve):\n got %v\nwant %v", got, want)
	}
	t.Setenv("FLOWWARDEN_DATA_DIR", "/from-env")
	t.Setenv("FLOWWARDEN_LOG_LEVEL", "error")
	want["data-dir"], want["log-level"] = "/from-env", "error"
	if got := effective("serve"); !reflect.DeepEqual(got, want) {
		t.Fatalf("the environment over the file:\n got %v\nwant %v", got, want)
	}
	want["data-dir"], want["flush-interval"] = "/from-flag", "2s"
	if got := effective("serve", "--data-dir", "/from-flag", "--flush-interval", "2s"); !reflect.DeepEqual(got, want) {
		t.Fatalf("the command line over both:\n got %v\nwant %v", got, want)
	}

	if err := os.WriteFile(cfg, []byte("no-such-flag: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "--config", cfg, "version"); err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("unknown config key: got %v", err)
	}
	t.Setenv("FLOWWARDEN_LOG_LEVEL", "loud")
	if _, err := run(t, "version"); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("bad env value: got %v", err)
	}
}
