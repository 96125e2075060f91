package embedded_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// envIntruder turns the test binary into a process that tries every way in
// to the server described in the variable's JSON, and prints what answered.
const envIntruder = "FLOWWARDEN_TEST_INTRUDER"

type target struct {
	Native, HTTP, DataDir string
}

// attempts tries to run SQL on the server without its passwords (and to
// read them), as whoever runs it. Each result is "refused: …" or
// "ANSWERED: …".
func attempts(tg target) map[string]string {
	out := map[string]string{}
	post := func(name, user, password, sql string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+tg.HTTP+"/", strings.NewReader(sql))
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			out[name] = "refused: " + err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			out[name] = "ANSWERED: " + string(body)
		} else {
			out[name] = "refused: " + resp.Status + " " + firstLine(string(body))
		}
	}
	get := func(name, rawURL string) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(rawURL)
		if err != nil {
			out[name] = "refused: " + err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			out[name] = "ANSWERED: " + string(body)
		} else {
			out[name] = "refused: " + resp.Status + " " + firstLine(string(body))
		}
	}
	native := func(name, user, password string) {
		conn, err := ch.Open(&ch.Options{Addr: []string{tg.Native}, Auth: ch.Auth{Username: user, Password: password}, DialTimeout: 10 * time.Second})
		if err != nil {
			out[name] = "refused: " + err.Error()
			return
		}
		defer conn.Close()
		var v uint8
		if err := conn.QueryRow(context.Background(), "SELECT 42").Scan(&v); err != nil {
			out[name] = "refused: " + firstLine(err.Error())
			return
		}
		out[name] = fmt.Sprint("ANSWERED: ", v)
	}
	post("http anonymous", "", "", "SELECT 42")
	post("http default", "default", "", "SELECT 42")
	post("http admin, wrong password", embedded.AdminUser, "0123abcd", "SELECT 42")
	post("http reader, no password", embedded.ReaderUser, "", "SELECT 42")
	post("http anonymous, file()", "", "", "SELECT file('/etc/hostname')")
	get("http GET ?query=", "http://"+tg.HTTP+"/?query="+url.QueryEscape("SELECT 42"))
	get("http GET ?user=default", "http://"+tg.HTTP+"/?user=default&query="+url.QueryEscape("SELECT 42"))
	native("native anonymous", "", "")
	native("native default", "default", "")
	native("native admin, wrong password", embedded.AdminUser, "0123abcd")
	for _, f := range []string{embedded.CredentialsFile(tg.DataDir), filepath.Join(tg.DataDir, "embedded-clickhouse.json"),
		filepath.Join(tg.DataDir, "clickhouse-config", "users.xml")} {
		if b, err := os.ReadFile(f); err != nil {
			out["read "+filepath.Base(f)] = "refused: " + err.Error()
		} else {
			out["read "+filepath.Base(f)] = "ANSWERED: " + string(b)
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// runIntruderIfRequested: see envIntruder.
func runIntruderIfRequested() {
	raw := os.Getenv(envIntruder)
	if raw == "" {
		return
	}
	var tg target
	if err := json.Unmarshal([]byte(raw), &tg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	b, _ := json.Marshal(map[string]any{"uid": os.Getuid(), "results": attempts(tg)})
	fmt.Println(string(b))
	os.Exit(0)
}

// TestOnlyFlowwardenCanRunSQL starts a server as flowwarden does and tries
// to run SQL on it over HTTP and the native protocol, and to read its
// passwords: as another local user (nobody, uid 65534, when the test runs
// as root) and as root without the passwords. Nothing may answer; with the
// passwords both users answer, and the server outlives the attempts.
func TestOnlyFlowwardenCanRunSQL(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.New(embedded.Config{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	tg := target{Native: s.NativeAddr(), HTTP: s.HTTPAddr(), DataDir: dir}

	check := func(t *testing.T, who string, results map[string]string) {
		t.Helper()
		if len(results) < 13 {
			t.Fatalf("%s: only %d attempts reported: %v", who, len(results), results)
		}
		for name, r := range results {
			if !strings.HasPrefix(r, "refused: ") {
				t.Errorf("%s, %s: %s", who, name, r)
			} else {
				t.Logf("%s, %s: %s", who, name, r)
			}
		}
	}

	t.Run("nobody", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run a process as nobody")
		}
		// nobody must be able to run the test binary: copy it where it can.
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		binDir, err := os.MkdirTemp("", "flowwarden-intruder-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(binDir)
		if err := os.Chmod(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(binDir, "intruder")
		raw, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, raw, 0o755); err != nil {
			t.Fatal(err)
		}
		spec, _ := json.Marshal(tg)
		cmd := exec.Command(bin)
		cmd.Env = []string{envIntruder + "=" + string(spec)}
		cmd.Dir = binDir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("intruder: %v: %s", err, stderr.String())
		}
		var rep struct {
			UID     int               `json:"uid"`
			Results map[string]string `json:"results"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("intruder output %q: %v", out, err)
		}
		if rep.UID != 65534 {
			t.Fatalf("intruder ran as uid %d", rep.UID)
		}
		check(t, "nobody", rep.Results)
	})

	t.Run("owner without the passwords", func(t *testing.T) {
		results := attempts(tg)
		// The owner (root here) can read the files, so only the network
		// attempts count.
		for k := range results {
			if strings.HasPrefix(k, "read ") {
				delete(results, k)
			}
		}
		if len(results) != 10 {
			t.Fatalf("want 10 network attempts, got %v", results)
		}
		for name, r := range results {
			if !strings.HasPrefix(r, "refused: ") {
				t.Errorf("%s: %s", name, r)
			}
		}
	})

	// With the passwords, both users answer: the server outlived it all.
	cred := s.Credentials()
	for _, u := range []struct{ user, password string }{{embedded.AdminUser, cred.Admin}, {embedded.ReaderUser, cred.Reader}} {
		conn, err := ch.Open(&ch.Options{Addr: []string{s.NativeAddr()}, Auth: ch.Auth{Username: u.user, Password: u.password}})
		if err != nil {
			t.Fatal(err)
		}
		var v uint8
		err = conn.QueryRow(context.Background(), "SELECT 42").Scan(&v)
		conn.Close()
		if err != nil || v != 42 {
			t.Fatalf("%s with its password: %v, %d", u.user, err, v)
		}
	}
	for _, f := range []string{embedded.CredentialsFile(dir), filepath.Join(dir, "embedded-clickhouse.json")} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}

// TestReaderReadsOnlyTables: the read-only user reads tables and nothing
// else: no host file through file() (the scalar function checks no grant:
// the server's Landlock confinement refuses it, for the admin too), no
// table function or file table, no write, no way out of readonly.
func TestReaderReadsOnlyTables(t *testing.T) {
	native, _ := chtest.Server(t)
	if chtest.Embedded(t) == nil {
		t.Skip("FLOWWARDEN_TEST_CLICKHOUSE is set: this is about the embedded server")
	}
	_, db := chtest.Database(t)
	ctx := context.Background()
	admin, err := ch.Open(mustParse(t, chtest.DSN(native, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, q := range []string{"CREATE DATABASE " + db, "CREATE TABLE " + db + ".t (a UInt8) ENGINE = MergeTree ORDER BY a", "INSERT INTO " + db + ".t VALUES (7)"} {
		if err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	reader, err := ch.Open(mustParse(t, chtest.ReaderDSN(native, db)))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var a uint8
	if err := reader.QueryRow(ctx, "SELECT a FROM t").Scan(&a); err != nil || a != 7 {
		t.Fatalf("reader cannot read its table: %v", err)
	}
	if err := reader.QueryRow(ctx, "SELECT a FROM t SETTINGS max_execution_time = 0.5").Scan(&a); err != nil {
		t.Fatalf("reader cannot set a limit: %v", err)
	}
	refused := []string{
		"SELECT * FROM file('/etc/hostname', 'LineAsString')",
		"SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
		"SELECT * FROM remote('" + native + "', system.one)",
		"SELECT * FROM `/etc/hostname`",
		"SELECT * FROM executable('true', 'LineAsString', 'l String')",
		"INSERT INTO t VALUES (1)",
		"INSERT INTO FUNCTION file('x.txt', 'LineAsString', 'l String') VALUES ('x')",
		"CREATE TABLE t2 (a UInt8) ENGINE = Memory",
		"DROP TABLE t",
		"SELECT 1 SETTINGS readonly = 0",
		"SELECT 1 SETTINGS allow_ddl = 1",
	}
	confined := []string{
		"SELECT file('/etc/hostname')",
		"SELECT file('/proc/1/environ')",
		"SELECT file('" + embedded.CredentialsFile(filepath.Dir(mustDataPath(t))) + "')",
	}
	if embedded.LandlockABI() > 0 {
		refused = append(refused, confined...)
	} else {
		t.Log("no Landlock in this kernel: scalar file() is not refused (documented fallback)")
	}
	for _, q := range refused {
		var s string
		if err := reader.QueryRow(ctx, q).Scan(&s); err == nil {
			t.Errorf("reader ran %q: %q", q, s)
		} else {
			t.Logf("reader %q: %s", q, firstLine(err.Error()))
		}
	}
	if embedded.LandlockABI() > 0 {
		for _, q := range confined {
			var s string
			if err := admin.QueryRow(ctx, q).Scan(&s); err == nil {
				t.Errorf("admin read a file outside the data path: %q: %q", q, s)
			}
		}
	}
	if err := reader.QueryRow(ctx, "SELECT a FROM t").Scan(&a); err != nil {
		t.Fatalf("reader after the refusals: %v", err)
	}
}

// mustDataPath is the ClickHouse path of the shared test server.
func mustDataPath(t *testing.T) string {
	t.Helper()
	native, _ := chtest.Server(t)
	conn, err := ch.Open(mustParse(t, chtest.DSN(native, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var p string
	if err := conn.QueryRow(context.Background(), "SELECT path FROM system.disks WHERE name = 'default'").Scan(&p); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(p, "/")
}

func mustParse(t *testing.T, dsn string) *ch.Options {
	t.Helper()
	o, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestChildEnvironmentIsMinimal: secrets of the parent's environment do
// not reach the server (file('/proc/self/environ') once printed them).
func TestChildEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("GITHUB_TOKEN", "ghp_must_not_leak")
	t.Setenv("FLOWWARDEN_CLICKHOUSE", "clickhouse://u:must_not_leak@h/db")
	s, err := embedded.New(embedded.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if kv == "" {
			continue
		}
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "FLOWWARDEN_EMBEDDED_CLICKHOUSE_") && name != embedded.EnvLibPath && name != "TZ" {
			t.Errorf("the server's environment has %s", name)
		}
	}
}
