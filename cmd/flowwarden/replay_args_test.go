package main

import (
	"context"
	"strings"
	"testing"
)

// TestReplayTakesFilesAsArguments: replay reads the files given as
// arguments (shell globs) as it reads those after --file; it refuses one
// that holds no flow before it listens.
func TestReplayTakesFilesAsArguments(t *testing.T) {
	_, err := runIn(context.Background(), nil, "replay", "--listen", "127.0.0.1:0", "../../README.md")
	if err == nil || !strings.Contains(err.Error(), "no flows in [../../README.md]") {
		t.Errorf("replay README.md: %v", err)
	}
	_, err = runIn(context.Background(), nil, "replay", "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "give at least one file") {
		t.Errorf("replay without files: %v", err)
	}
}
