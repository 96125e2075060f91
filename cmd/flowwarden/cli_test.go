package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// runCLI executes the CLI in-process as main does (exit status included),
// with stdin from in, and returns stdout and stderr apart.
func runCLI(t *testing.T, in io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := newRootCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	if in != nil {
		cmd.SetIn(in)
	}
	cmd.SetArgs(args)
	code = execute(context.Background(), cmd, &errb)
	return out.String(), errb.String(), code
}

// withStdin points os.Stdin at a file holding data while fn runs (the file
// readers open os.Stdin for "-", as cat does).
func withStdin(t *testing.T, data []byte, fn func()) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old; f.Close() }()
	fn()
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"30d":                       now.Add(-30 * 24 * time.Hour),
		"1d12h":                     now.Add(-36 * time.Hour),
		"90m":                       now.Add(-90 * time.Minute),
		"2026-11-01T08:30:00Z":      time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC),
		"2026-11-01T08:30:00+01:00": time.Date(2026, 11, 1, 7, 30, 0, 0, time.UTC),
		"2026-11-01":                time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseWhen(in, now, "--since")
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-3d", "30x", "yesterday", "0d"} {
		if _, err := parseWhen(bad, now, "--since"); err == nil {
			t.Errorf("parseWhen(%q) accepted", bad)
		}
	}
}

// storedSamples is a database holding the Hubble samples, retimed into the
// last ten minutes.
func storedSamples(t *testing.T) (dsn, file string) {
	t.Helper()
	dsn, _ = chtest.Database(t)
	file, n := retimedSamples(t)
	if _, errs, code := runCLI(t, nil, "ingest", "--clickhouse", dsn, "--hubble-file", file, "--log-level", "warn"); code != 0 {
		t.Fatalf("ingest: %d\n%s", code, errs)
	}
	if n == 0 {
		t.Fatal("no samples")
	}
	return dsn, file
}

// TestHistoryReadersTakeDaysAndTimes runs every command that reads stored
// history with --since 30d, and with an RFC 3339 window around the stored
// flows (which must find them) and one before them (which must not).
func TestHistoryReadersTakeDaysAndTimes(t *testing.T) {
	dsn, _ := storedSamples(t)
	now := time.Now().UTC()
	around := []string{"--since", now.Add(-time.Hour).Format(time.RFC3339), "--until", now.Add(time.Hour).Format(time.RFC3339)}
	before := []string{"--since", "2026-01-01T00:00:00Z", "--until", now.Add(-2 * time.Hour).Format(time.RFC3339)}
	pol := t.TempDir()
	if _, errs, code := runCLI(t, nil, "recommend", "--clickhouse", dsn, "--since", "30d", "--out", pol); code != 0 {
		t.Fatalf("recommend: %s", errs)
	}
	type reader struct {
		name string
		args func(window []string) []string
		// found tells from stdout whether the window held the flows.
		found func(stdout string) bool
	}
	readers := []reader{
		{"detect", func(w []string) []string { return append([]string{"detect", "-o", "json"}, w...) },
			nil},
		{"recommend", func(w []string) []string {
			return append([]string{"recommend", "-o", "json", "--out", t.TempDir()}, w...)
		}, func(s string) bool {
			return strings.Contains(s, `"workloads": `) && !strings.Contains(s, `"workloads": 0`)
		}},
		{"verify", func(w []string) []string { return append([]string{"verify", "-o", "json", "--policies", pol}, w...) }, nil},
		{"report", func(w []string) []string {
			return append([]string{"report", "-o", "json", "--policies", pol, "--out", t.TempDir()}, w...)
		}, func(s string) bool { return !strings.Contains(s, `"observed_from": "0001-01-01T00:00:00Z"`) }},
	}
	for _, r := range readers {
		for _, w := range [][]string{{"--since", "30d"}, around, before} {
			args := append([]string{"--clickhouse", dsn, "--log-format", "json"}, r.args(w)...)
			stdout, stderr, code := runCLI(t, nil, args...)
			if r.name == "recommend" && w[1] == "2026-01-01T00:00:00Z" {
				if code != 1 || !strings.Contains(stderr, "no workloads in the observed traffic") {
					t.Errorf("%v over an empty window: exit %d\n%s", args, code, stderr)
				}
				continue
			}
			if code != 0 {
				t.Errorf("%v: exit %d\n%s", args, code, stderr)
				continue
			}
			// How many flows the command read, from its JSON log.
			read := flowsReadLogged(t, stderr)
			want := w[1] != "2026-01-01T00:00:00Z"
			if r.found != nil && r.found(stdout) != want {
				t.Errorf("%v: found=%v, want %v\n%s", args, !want, want, stdout)
			}
			if read >= 0 && (read > 0) != want {
				t.Errorf("%v: read %d stored flows, want any=%v", args, read, want)
			}
		}
	}
}

// flowsReadLogged is the "flows" count of detect's "stored history read"
// log line, or -1 when the command logs none.
func flowsReadLogged(t *testing.T, stderr string) int {
	t.Helper()
	n := -1
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var rec map[string]any
		if !strings.HasPrefix(sc.Text(), "{") {
			continue // verify's summary, not a log record
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("--log-format json wrote a line that is not JSON: %q", sc.Text())
		}
		if rec["msg"] == "stored history read" {
			n = int(rec["flows"].(float64))
		}
	}
	return n
}

// TestLogFormatJSON: with --log-format json every line on stderr is a JSON
// object with time, level and msg; text stays key=value.
func TestLogFormatJSON(t *testing.T) {
	dsn, _ := chtest.Database(t)
	// detect --since reads a flowwarden database, never creates one: make it
	// (the samples are from 2021, so the last hour stays empty).
	if out, err := run(t, "ingest", "--clickhouse", dsn, "--log-level", "warn", "../../testdata/hubble/basic-sample-10-flows.json"); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	_, stderr, code := runCLI(t, nil, "--clickhouse", dsn, "--log-format", "json", "detect", "--since", "1h")
	if code != 0 {
		t.Fatalf("detect: %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) < 2 {
		t.Fatalf("expected the read and the empty-window warning logged:\n%s", stderr)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("not a JSON log record: %q (%v)", l, err)
		}
	}
	_, stderr, _ = runCLI(t, nil, "--clickhouse", dsn, "detect", "--since", "1h")
	if !strings.Contains(stderr, `level=WARN msg="nothing stored in the window"`) {
		t.Errorf("text logs:\n%s", stderr)
	}
	if _, stderr, code := runCLI(t, nil, "--log-format", "xml", "version"); code != 1 || !strings.Contains(stderr, "--log-format") {
		t.Errorf("--log-format xml: exit %d, %s", code, stderr)
	}
}

// TestConfigFileServesEveryCommand: one config file may hold any command's
// keys; each command takes its own and ignores the others', and a key no
// command has is refused.
func TestConfigFileServesEveryCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flowwarden.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// hubble and alertmanager are serve's, max-rows query's, output version's.
	write("hubble: relay:4245\nalertmanager: [http://am:9093]\nmax-rows: 10\noutput: json\nlog-format: json\n")
	stdout, stderr, code := runCLI(t, nil, "--config", cfg, "version")
	if code != 0 {
		t.Fatalf("version with other commands' keys: exit %d\n%s", code, stderr)
	}
	var b buildInfo
	if err := json.Unmarshal([]byte(stdout), &b); err != nil || b.GoVersion == "" {
		t.Errorf("output: json from the config file not applied: %v\n%s", err, stdout)
	}
	write("hubble: relay:4245\nhubbel-tls: true\n")
	if _, stderr, code := runCLI(t, nil, "--config", cfg, "version"); code != 1 || !strings.Contains(stderr, `"hubbel-tls" is not a flag of any flowwarden command`) {
		t.Errorf("a key of no command: exit %d, %s", code, stderr)
	}
}

// TestVerifyExitCodes: like kubectl diff, 0 when the policies allow every
// forwarded flow, 1 when they would deny some, 2 on an error (bad flags,
// unreadable policies).
func TestVerifyExitCodes(t *testing.T) {
	files := sampleArgs()
	pol := t.TempDir()
	if _, stderr, code := runCLI(t, nil, append([]string{"recommend", "--out", pol}, files...)...); code != 0 {
		t.Fatalf("recommend: %d %s", code, stderr)
	}
	if _, stderr, code := runCLI(t, nil, append([]string{"verify", "--policies", pol}, files...)...); code != 0 {
		t.Errorf("verify of the recommended policies: exit %d, want 0\n%s", code, stderr)
	}
	// A default deny in every namespace the recommendation covers.
	deny := t.TempDir()
	entries, _ := os.ReadDir(pol)
	var denyAll strings.Builder
	for _, e := range entries {
		if e.IsDir() {
			denyAll.WriteString("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: " + e.Name() +
				"}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n")
		}
	}
	if err := os.WriteFile(filepath.Join(deny, "deny.yaml"), []byte(denyAll.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, nil, append([]string{"verify", "--policies", deny}, files...)...)
	if code != 1 || !strings.Contains(stdout, `"reason"`) {
		t.Errorf("verify of a default deny: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	for _, args := range [][]string{
		append([]string{"verify", "--policies", filepath.Join(deny, "missing")}, files...),
		append([]string{"verify", "--policies", deny, "--no-such-flag"}, files...),
		{"verify", "--policies", deny}, // no traffic given
		append([]string{"verify", "--policies", deny, "-o", "xml"}, files...),
	} {
		if _, stderr, code := runCLI(t, nil, args...); code != 2 || !strings.Contains(stderr, "flowwarden") {
			t.Errorf("%v: exit %d, want 2 with the error\n%s", args, code, stderr)
		}
	}
}

// jsonLines checks that out is one or more JSON objects, one per line.
func jsonLines(t *testing.T, what, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Errorf("%s -o json printed nothing", what)
		return
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("%s -o json: line is not a JSON object: %q", what, l)
			return
		}
	}
}

// jsonDoc checks that out is one JSON object.
func jsonDoc(t *testing.T, what, out string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Errorf("%s -o json: not one JSON object: %v\n%s", what, err, out)
	}
	return v
}

// TestEveryPrintingCommandSpeaksJSON runs every command that prints a
// result with -o json (and --format json, its alias, once) and parses what
// it printed.
func TestEveryPrintingCommandSpeaksJSON(t *testing.T) {
	dsn, file := storedSamples(t)
	files := sampleArgs()
	must := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := runCLI(t, nil, args...)
		if code > 1 { // verify exits 1 when it prints denied flows
			t.Fatalf("%v: exit %d\n%s", args, code, stderr)
		}
		return stdout
	}
	printing := map[string]bool{}
	check := func(name string, lines bool, args ...string) {
		t.Helper()
		printing[name] = true
		out := must(args...)
		if lines {
			jsonLines(t, name, out)
		} else {
			jsonDoc(t, name, out)
		}
	}
	check("version", false, "version", "-o", "json")
	check("ingest", false, "ingest", "--clickhouse", dsn, "--hubble-file", file, "-o", "json", "--log-level", "warn")
	check("query", true, "query", "--clickhouse", dsn, "-o", "json", "SELECT verdict, count() AS n FROM flows GROUP BY verdict")
	must("query", "--clickhouse", dsn, "--format", "json", "SELECT 1 AS one") // the alias
	check("detect", true, "detect", "-o", "json", "--hubble-file", "../../testdata/scenarios/metadata-probe.jsonl.gz")
	pol := t.TempDir()
	check("recommend", false, append([]string{"recommend", "-o", "json", "--out", pol}, files...)...)
	// A policy set that denies something, so that verify prints flows.
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	if err := os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: bookinfo}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("verify", true, append([]string{"verify", "-o", "json", "--policies", deny}, files...)...)
	check("report", false, append([]string{"report", "-o", "json", "--policies", pol, "--out", t.TempDir()}, files...)...)
	repo, _ := initRepo(t)
	check("enforce", false, append([]string{"enforce", "-o", "json", "--repo", repo, "--branch", "flowwarden/test"}, files...)...)
	// table and yaml too, for one command each.
	if out := must("version", "-o", "yaml"); !strings.Contains(out, "goVersion: go") {
		t.Errorf("version -o yaml:\n%s", out)
	}
	if out := must(append([]string{"verify", "-o", "table", "--policies", deny}, files...)...); !strings.HasPrefix(out, "TIME ") {
		t.Errorf("verify -o table:\n%s", out)
	}
	// Every command with an output flag was checked above.
	for _, c := range newRootCommand().Commands() {
		if c.Flags().Lookup("output") != nil && !printing[c.Name()] {
			t.Errorf("%s has -o but is not checked here", c.Name())
		}
		if c.Flags().Lookup("output") == nil && !c.Hidden && c.Name() != "serve" && c.Name() != "replay" {
			t.Errorf("%s prints but has no -o", c.Name())
		}
	}
}

// TestDashIsStdin: "-" reads standard input wherever a file is read: flows
// (--hubble-file, as --envoy-file), policies (--policies -), the SQL of query.
func TestDashIsStdin(t *testing.T) {
	scenario := "../../testdata/scenarios/metadata-probe.jsonl.gz"
	fromFile, stderr, code := runCLI(t, nil, "detect", "--hubble-file", scenario)
	if code != 0 || fromFile == "" {
		t.Fatalf("detect from the file: %d %s", code, stderr)
	}
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	var flows []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, b...)
	}
	// The same flows from a file and from stdin recommend the same policies.
	pol := t.TempDir()
	all := filepath.Join(t.TempDir(), "all.json")
	if err := os.WriteFile(all, flows, 0o600); err != nil {
		t.Fatal(err)
	}
	want, _, _ := runCLI(t, nil, "recommend", "-o", "json", "--out", pol, "--hubble-file", all)
	var got string
	withStdin(t, flows, func() {
		got, stderr, code = runCLI(t, nil, "recommend", "-o", "json", "--out", pol, "--hubble-file", "-")
	})
	if code != 0 || jsonDoc(t, "recommend", got)["workloads"] != jsonDoc(t, "recommend", want)["workloads"] || jsonDoc(t, "recommend", got)["workloads"] == 0.0 {
		t.Errorf("recommend --hubble-file -: exit %d\n%s\nwant\n%s\n%s", code, got, want, stderr)
	}
	// Policies from stdin judge like the same policies from a file.
	var policies []byte
	_ = filepath.WalkDir(pol, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			b, _ := os.ReadFile(p)
			policies = append(append(policies, "---\n"...), b...)
		}
		return nil
	})
	// (Without the directory, verify has no record of what recommend left
	// out on purpose, so the summary is compared up to the policy count and
	// the flows checked and denied.)
	summary := func(stderr string) string {
		first, _, _ := strings.Cut(stderr, ":")
		return first
	}
	_, fromDir, code1 := runCLI(t, nil, "verify", "-o", "table", "--policies", pol, "--hubble-file", all)
	var fromStdin string
	withStdin(t, policies, func() {
		_, fromStdin, code = runCLI(t, nil, "verify", "-o", "table", "--policies", "-", "--hubble-file", all)
	})
	if code1 != 0 || code > 1 || summary(fromStdin) != summary(fromDir) || strings.HasPrefix(fromStdin, "0 policies") {
		t.Errorf("verify --policies - (exit %d): %q, from the directory (exit %d): %q", code, summary(fromStdin), code1, summary(fromDir))
	}
}

// TestEveryCommandHasExamples: each command's help shows examples, and the
// shell completion cobra provides works.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRootCommand()
	for _, c := range append(root.Commands(), root) {
		if !c.Hidden && strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no examples in its help", c.Name())
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, stderr, code := runCLI(t, nil, "completion", shell)
		if code != 0 || !strings.Contains(out, "flowwarden") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes\n%s", shell, code, len(out), stderr)
		}
	}
	// Completion offers the -o values.
	out, _, _ := runCLI(t, nil, "__complete", "verify", "-o", "")
	if !strings.Contains(out, "json") || !strings.Contains(out, "table") {
		t.Errorf("no completion of -o values:\n%s", out)
	}
}

// TestServeHubbleSinceTakesDaysAndTimes: serve's --hubble-since (how far
// back the first Hubble stream starts) reads the same forms.
func TestServeHubbleSinceTakesDaysAndTimes(t *testing.T) {
	dsn, _ := chtest.Database(t)
	_, stderr, code := runCLI(t, nil, "serve", "--clickhouse", dsn, "--hubble", "127.0.0.1:1", "--no-spool", "--listen", "127.0.0.1:0", "--hubble-since", "yesterday")
	if code != 1 || !strings.Contains(stderr, `--hubble-since "yesterday": want a duration (24h) or a time`) {
		t.Errorf("serve --hubble-since yesterday: exit %d\n%s", code, stderr)
	}
}
