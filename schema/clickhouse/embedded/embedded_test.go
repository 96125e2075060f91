package embedded_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

func TestMain(m *testing.M) {
	runIntruderIfRequested()
	chtest.Main(m)
}

// TestSupervisorRestartsAndDataPersists kills the child and expects the
// supervisor to bring it back with the data it had, on the same ports.
func TestSupervisorRestartsAndDataPersists(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.New(embedded.Config{DataDir: dir, RestartBackoff: 100 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	chtest.Register(s)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS keep",
		"CREATE TABLE keep.t (a UInt8) ENGINE = MergeTree ORDER BY a",
		"INSERT INTO keep.t VALUES (42)",
	} {
		if err := chtest.Exec(s.HTTPAddr(), q); err != nil {
			t.Fatal(err)
		}
	}
	s.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for s.Restarts() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("supervisor did not restart the killed server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := chtest.Exec(s.HTTPAddr(), "SELECT throwIf(sum(a) != 42) FROM keep.t"); err != nil {
		t.Fatalf("data lost across restart: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := chtest.Exec(s.HTTPAddr(), "SELECT 1"); err == nil {
		t.Fatal("server still answers after Run returned")
	}
}

func TestMissingLibraryIsAClearError(t *testing.T) {
	t.Setenv(embedded.EnvLibPath, "/nonexistent/libchdb.so")
	_, err := embedded.New(embedded.Config{DataDir: t.TempDir()}, nil)
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("want a not-exist error naming the path, got %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestStartPicksNewPortsWhenOneIsTaken takes the native port the server
// picked before the child can bind it, as an outgoing connection or
// another test's server once did in CI: Start picks again instead of
// failing. Ports given in the config are never changed.
func TestStartPicksNewPortsWhenOneIsTaken(t *testing.T) {
	s, err := embedded.New(embedded.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	taken := s.NativeAddr()
	l, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start with a taken port: %v", err)
	}
	defer s.Stop()
	chtest.Register(s)
	if s.NativeAddr() == taken {
		t.Fatalf("still on the taken port %s", taken)
	}
	if err := chtest.Exec(s.HTTPAddr(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	fixed, err := embedded.New(embedded.Config{DataDir: t.TempDir(), TCPPort: l.Addr().(*net.TCPAddr).Port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = fixed.Start(context.Background())
	if err == nil {
		fixed.Stop()
		t.Fatal("a server configured on a taken port started")
	}
	if !strings.Contains(err.Error(), "Address already in use") || fixed.NativeAddr() != taken {
		t.Fatalf("want a clear error on the configured port %s, got %s: %v", taken, fixed.NativeAddr(), err)
	}
}
