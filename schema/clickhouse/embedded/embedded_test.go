package embedded_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

func TestMain(m *testing.M) { chtest.Main(m) }

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
