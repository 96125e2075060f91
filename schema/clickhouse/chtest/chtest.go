// Package chtest gives tests a real ClickHouse: the server named by
// FLOWWARDEN_TEST_CLICKHOUSE (host:port of the native protocol, with
// FLOWWARDEN_TEST_CLICKHOUSE_HTTP for HTTP), or else an embedded one started
// from libchdb.so for the test binary. Each test gets its own database.
package chtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

var (
	once    sync.Once
	server  *embedded.Server
	dataDir string
	native  string
	httpAdr string
	initErr error
	seq     atomic.Int64
)

// Main wraps testing.M.Run for packages that use the embedded server: it
// lets the test binary serve as the server child and stops the server at the
// end. Call it from TestMain.
func Main(m *testing.M) {
	embedded.RunChildIfRequested()
	code := m.Run()
	if server != nil {
		server.Stop()
		os.RemoveAll(dataDir)
	}
	os.Exit(code)
}

func start() {
	if addr := os.Getenv("FLOWWARDEN_TEST_CLICKHOUSE"); addr != "" {
		native, httpAdr = addr, os.Getenv("FLOWWARDEN_TEST_CLICKHOUSE_HTTP")
		return
	}
	dataDir, initErr = os.MkdirTemp("", "flowwarden-chtest-")
	if initErr != nil {
		return
	}
	server, initErr = embedded.New(embedded.Config{DataDir: dataDir}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if initErr != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if initErr = server.Start(ctx); initErr != nil {
		return
	}
	native, httpAdr = server.NativeAddr(), server.HTTPAddr()
}

// Server returns the native and HTTP addresses of the test ClickHouse,
// failing the test when none can be had.
func Server(t testing.TB) (nativeAddr, httpAddr string) {
	t.Helper()
	once.Do(start)
	if initErr != nil {
		t.Fatalf("no ClickHouse for tests (set FLOWWARDEN_TEST_CLICKHOUSE or run `make deps`): %v", initErr)
	}
	return native, httpAdr
}

// Embedded returns the embedded server, or nil when tests use an external one.
func Embedded(t testing.TB) *embedded.Server {
	Server(t)
	return server
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_]+`)

// Database returns a DSN for a database name unique to this test; it is
// created by clickhouse.Open and dropped when the test ends.
func Database(t testing.TB) (dsn, database string) {
	t.Helper()
	addr, _ := Server(t)
	name := strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	database = fmt.Sprintf("t_%s_%d_%d", name, os.Getpid(), seq.Add(1))
	if httpAdr != "" {
		t.Cleanup(func() { _ = Exec(httpAdr, "DROP DATABASE IF EXISTS "+database) })
	}
	return "clickhouse://default@" + addr + "/" + database, database
}

// Exec runs one statement over the HTTP interface.
func Exec(httpAddr, sql string) error {
	resp, err := http.Post("http://"+httpAddr+"/", "text/plain", strings.NewReader(sql))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("clickhouse: %s: %s", resp.Status, body)
	}
	return nil
}

// Shard is one server of a test cluster.
type Shard struct {
	Native, HTTP string
}

// Cluster starts n embedded ClickHouse servers that know each other as the
// cluster name (n shards of one replica each, from a remote_servers file
// every server loads) and stops them when the test ends. There is no
// Keeper: the cluster has Distributed tables but neither replication nor
// ON CLUSTER DDL.
func Cluster(t testing.TB, name string, n int) []Shard {
	t.Helper()
	if os.Getenv("FLOWWARDEN_TEST_CLICKHOUSE") != "" {
		t.Log("FLOWWARDEN_TEST_CLICKHOUSE is set, but a cluster test starts embedded servers of its own")
	}
	dir := t.TempDir()
	free, err := embedded.FreePorts(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	ports := make([][2]int, n)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "<clickhouse>\n  <remote_servers>\n    <%s>\n", name)
	for i := range ports {
		ports[i] = [2]int{free[2*i], free[2*i+1]}
		fmt.Fprintf(&cfg, "      <shard><replica><host>127.0.0.1</host><port>%d</port></replica></shard>\n", ports[i][0])
	}
	fmt.Fprintf(&cfg, "    </%s>\n  </remote_servers>\n</clickhouse>\n", name)
	configFile := filepath.Join(dir, "cluster.xml")
	if err := os.WriteFile(configFile, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	servers := make([]*embedded.Server, n)
	for i := range servers {
		s, err := embedded.New(embedded.Config{DataDir: filepath.Join(dir, fmt.Sprintf("shard%d", i+1)), TCPPort: ports[i][0], HTTPPort: ports[i][1],
			ConfigFile: configFile}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
	}
	return startAll(t, servers)
}

func startAll(t testing.TB, servers []*embedded.Server) []Shard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, len(servers))
	for _, s := range servers {
		t.Cleanup(s.Stop)
		go func() { errs <- s.Start(ctx) }()
	}
	for range servers {
		if err := <-errs; err != nil {
			t.Fatalf("start a cluster server: %v", err)
		}
	}
	out := make([]Shard, len(servers))
	for i, s := range servers {
		out[i] = Shard{Native: s.NativeAddr(), HTTP: s.HTTPAddr()}
	}
	return out
}
