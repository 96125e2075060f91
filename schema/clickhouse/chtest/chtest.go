// Package chtest gives tests a real ClickHouse: the server named by
// FLOWWARDEN_TEST_CLICKHOUSE (host:port of the native protocol, with
// FLOWWARDEN_TEST_CLICKHOUSE_HTTP for HTTP, and FLOWWARDEN_TEST_CLICKHOUSE_USER
// and _PASSWORD when it wants them), or else an embedded one started from
// libchdb.so for the test binary. Each test gets its own database. The
// embedded servers admit only flowwarden's users, with their passwords:
// take DSNs and URLs from here (Database, DSN, URL, Exec).
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
	"github.com/flowwarden/flowwarden/schema/freeport"
)

var (
	once    sync.Once
	server  *embedded.Server
	dataDir string
	native  string
	httpAdr string
	initErr error
	seq     atomic.Int64

	// logins maps a server's native and HTTP addresses to its admin
	// login, and readers to its read-only one.
	logins, readers sync.Map // addr → login
)

type login struct{ user, password string }

// Register makes Exec, DSN and URL log in to a server a test started itself.
func Register(s *embedded.Server) { register(s) }

func register(s *embedded.Server) {
	c := s.Credentials()
	for _, a := range []string{s.NativeAddr(), s.HTTPAddr()} {
		logins.Store(a, login{embedded.AdminUser, c.Admin})
		readers.Store(a, login{embedded.ReaderUser, c.Reader})
	}
}

func loginOf(m *sync.Map, addr string) login {
	if l, ok := m.Load(addr); ok {
		return l.(login)
	}
	user := os.Getenv("FLOWWARDEN_TEST_CLICKHOUSE_USER")
	if user == "" {
		user = "default"
	}
	return login{user, os.Getenv("FLOWWARDEN_TEST_CLICKHOUSE_PASSWORD")}
}

// DSN is a clickhouse-go DSN for database on the test server whose native
// address is addr, with its admin login.
func DSN(addr, database string) string {
	l := loginOf(&logins, addr)
	return "clickhouse://" + url.UserPassword(l.user, l.password).String() + "@" + addr + "/" + database
}

// ReaderDSN is DSN with the server's read-only login (for an external test
// server: the same login as DSN).
func ReaderDSN(addr, database string) string {
	l := loginOf(&readers, addr)
	return "clickhouse://" + url.UserPassword(l.user, l.password).String() + "@" + addr + "/" + database
}

// URL is the base URL of the HTTP interface at httpAddr with the admin
// login in it (net/http sends it as basic authentication).
func URL(httpAddr string) string {
	l := loginOf(&logins, httpAddr)
	return "http://" + url.UserPassword(l.user, l.password).String() + "@" + httpAddr
}

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
	register(server)
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
	return DSN(addr, database), database
}

// Exec runs one statement over the HTTP interface, as the server's admin.
func Exec(httpAddr, sql string) error {
	resp, err := http.Post(URL(httpAddr)+"/", "text/plain", strings.NewReader(sql))
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

// DSN is a clickhouse-go DSN for database on the shard, as its admin.
func (s Shard) DSN(database string) string { return DSN(s.Native, database) }

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
	free, err := freeport.Loopback(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	// The servers reach each other (Distributed tables) as the admin, so
	// they share its password.
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	password := hex.EncodeToString(pw)
	ports := make([][2]int, n)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "<clickhouse>\n  <remote_servers>\n    <%s>\n", name)
	for i := range ports {
		ports[i] = [2]int{free[2*i], free[2*i+1]}
		fmt.Fprintf(&cfg, "      <shard><replica><host>127.0.0.1</host><port>%d</port><user>%s</user><password>%s</password></replica></shard>\n",
			ports[i][0], embedded.AdminUser, password)
	}
	fmt.Fprintf(&cfg, "    </%s>\n  </remote_servers>\n</clickhouse>\n", name)
	configFile := filepath.Join(dir, "cluster.xml")
	if err := os.WriteFile(configFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	servers := make([]*embedded.Server, n)
	for i := range servers {
		s, err := embedded.New(embedded.Config{DataDir: filepath.Join(dir, fmt.Sprintf("shard%d", i+1)), TCPPort: ports[i][0], HTTPPort: ports[i][1],
			ConfigFile: configFile, AdminPassword: password}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
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
		register(s)
		out[i] = Shard{Native: s.NativeAddr(), HTTP: s.HTTPAddr()}
	}
	return out
}
