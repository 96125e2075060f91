package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// TestQueryCannotReadHostFiles: `flowwarden query` refuses file() and the
// table functions that reach outside the database by name first; behind
// that, on the embedded database it runs as the read-only user on a server
// confined to its data path (the server-side refusals are shown by
// schema/clickhouse and schema/clickhouse/embedded tests, past this check).
// A plain query still answers.
func TestQueryCannotReadHostFiles(t *testing.T) {
	dataDir := t.TempDir()
	// query reads a flowwarden database, never creates one: make it.
	if out, err := run(t, "ingest", "--data-dir", dataDir, "--log-level", "warn", "../../testdata/hubble/basic-sample-5-dns-flows.json"); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	out, err := run(t, "query", "--data-dir", dataDir, "--log-level", "warn", "--format", "csv", "SELECT 41 + 1 AS answer")
	if err != nil || !strings.Contains(out, "42") {
		t.Fatalf("a plain query: %v\n%s", err, out)
	}
	for _, sql := range []string{
		"SELECT file('/etc/hostname')",
		"SELECT substring(file('/etc/shadow'), 1, 60)",
		"SELECT * FROM file('/etc/hostname', 'LineAsString')",
		"SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
	} {
		out, err := run(t, "query", "--data-dir", dataDir, "--log-level", "warn", sql)
		if err == nil {
			t.Errorf("%s answered:\n%s", sql, out)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "are not allowed") {
			t.Errorf("%s: refused for another reason: %v", sql, err)
		}
	}
}

// TestEmbeddedWorksUnprivileged runs flowwarden as nobody (uid 65534): its
// embedded ClickHouse needs no privilege for any of its protections (the
// passwords, the one-session default user, Landlock, the pseudo-terminal),
// and query still reads as the read-only user and is refused host files.
func TestEmbeddedWorksUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as nobody")
	}
	lib, err := embedded.FindLibrary()
	if err != nil {
		t.Fatal(err)
	}
	if lib, err = filepath.EvalSymlinks(lib); err != nil {
		t.Fatal(err)
	}
	if !readableByAll(lib) {
		t.Skipf("nobody cannot read %s", lib)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "flowwarden-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dataDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "flowwarden")
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cli := func(argv ...string) (string, error) {
		args, _ := json.Marshal(argv)
		cmd := exec.Command(bin)
		cmd.Dir = dir
		cmd.Env = []string{"FLOWWARDEN_TEST_RUN_CLI=" + string(args), embedded.EnvLibPath + "=" + lib}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	query := func(sql string) (string, error) {
		return cli("query", "--data-dir", dataDir, "--log-level", "warn", "--format", "csv", sql)
	}
	// query reads a flowwarden database, never creates one: nobody makes it.
	sample := filepath.Join(dir, "sample.json")
	if err := os.WriteFile(sample, []byte(`{"flow":{"time":"2021-06-16T16:52:13.136834446Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.0.2","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":80}},"source":{"namespace":"a","pod_name":"a-1"},"destination":{"namespace":"b","pod_name":"b-1"},"Type":"L3_L4","node_name":"n1"}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("ingest", "--data-dir", dataDir, "--log-level", "warn", sample); err != nil {
		t.Fatalf("ingest as nobody: %v\n%s", err, out)
	}
	out, err := query("SELECT currentUser(), getSetting('readonly')")
	if err != nil || !strings.Contains(out, embedded.ReaderUser+",2") {
		t.Fatalf("query as nobody: %v\n%s", err, out)
	}
	if out, err := query("SELECT count() FROM system.one WHERE length(file('/etc/hostname')) > 0"); err == nil {
		t.Errorf("file() answered as nobody:\n%s", out)
	}
	st, err := os.Stat(embedded.CredentialsFile(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: uid %d mode %v, want nobody's, 0600", sys.Uid, st.Mode().Perm())
	}
	log, _ := os.ReadFile(filepath.Join(dataDir, "embedded-clickhouse.log"))
	if embedded.LandlockABI() > 0 && strings.Contains(string(log), "no Landlock") {
		t.Errorf("the server ran unconfined as nobody:\n%s", log)
	}
}

// readableByAll: every directory on the way is searchable by others and
// the file readable by them.
func readableByAll(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return false
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}
