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
