package clickhouse

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewWriterDoesNoIO: NewWriter neither creates the spool directory nor
// touches a segment a crash left open; Open does (sealing that segment, so
// it is inserted first), once, and Write, ResumePoint's SpooledUntil and
// Failure see the opened spool without an explicit Open.
func TestNewWriterDoesNoIO(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	cfg := DefaultWriterConfig()
	cfg.SpoolDir = dir
	w, err := NewWriter(cfg, "clickhouse://127.0.0.1:1/x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("NewWriter touched the spool directory: %v", err)
	}
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Open did not make the spool: %v", err)
	}
	if err := w.Write(context.Background(), testFlow(1)); err != nil {
		t.Fatal(err)
	}
	if got := w.SpooledUntil(); !got.Equal(testFlow(1).Time) {
		t.Errorf("SpooledUntil %v after one spooled flow at %v", got, testFlow(1).Time)
	}

	// A second writer on a spool left as by a crash (a segment still
	// open): New leaves it, Open (here through Write) seals it.
	open, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix+".open"))
	if len(open) != 1 {
		t.Fatalf("want one open segment after a write, have %v", open)
	}
	w2, err := NewWriter(cfg, "clickhouse://127.0.0.1:1/x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(open[0]); err != nil {
		t.Fatalf("NewWriter sealed the open segment: %v", err)
	}
	if err := w2.Failure(); err != nil {
		t.Fatalf("Failure on a healthy spool: %v", err)
	}
	if _, err := os.Stat(strings.TrimSuffix(open[0], ".open")); err != nil {
		t.Errorf("the segment left open was not sealed on first use: %v", err)
	}
	if got := w2.SpooledUntil(); !got.Equal(testFlow(1).Time) {
		t.Errorf("the second writer's SpooledUntil %v, want the spooled flow's %v", got, testFlow(1).Time)
	}

	// A spool that cannot be opened fails Open, Write and Run, and shows in Failure.
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SpoolDir = file
	w3, err := NewWriter(cfg, "clickhouse://127.0.0.1:1/x", nil, nil)
	if err != nil {
		t.Fatalf("NewWriter failed on a spool it should not touch yet: %v", err)
	}
	if w3.Open() == nil || w3.Write(context.Background(), testFlow(2)) == nil || w3.Run(context.Background()) == nil || w3.Failure() == nil {
		t.Error("a spool that cannot be opened went unnoticed")
	}
}
