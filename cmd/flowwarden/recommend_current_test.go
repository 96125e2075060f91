package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecommendChecksCurrentBeforeWriting: policies in force that cannot be
// read (--current) stop recommend before it writes anything into --out.
func TestRecommendChecksCurrentBeforeWriting(t *testing.T) {
	out := filepath.Join(t.TempDir(), "policies")
	file := filepath.Join("..", "..", "testdata", "hubble", "basic-sample-10-flows.json")
	_, err := runIn(context.Background(), nil, "recommend", file, "--out", out, "--current", filepath.Join(t.TempDir(), "missing"), "--log-level", "warn")
	if err == nil || !strings.Contains(err.Error(), "--current") {
		t.Fatalf("recommend with an unreadable --current: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--out was written before --current was read: %v", err)
	}
}
