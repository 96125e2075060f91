package main

import (
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// TestQueryCannotReadHostFiles: `flowwarden query` on the embedded database
// runs as its read-only user on a server confined to its data path, so the
// scalar file() (which no grant or readonly setting stops) is refused, as
// are the file and url table functions; a plain query still answers.
func TestQueryCannotReadHostFiles(t *testing.T) {
	dataDir := t.TempDir()
	out, err := run(t, "query", "--data-dir", dataDir, "--log-level", "warn", "--format", "csv", "SELECT 41 + 1 AS answer")
	if err != nil || !strings.Contains(out, "42") {
		t.Fatalf("a plain query: %v\n%s", err, out)
	}
	refused := []string{
		"SELECT * FROM file('/etc/hostname', 'LineAsString')",
		"SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
	}
	if embedded.LandlockABI() > 0 {
		refused = append(refused, "SELECT file('/etc/hostname')", "SELECT substring(file('/etc/shadow'), 1, 60)")
	} else {
		t.Log("no Landlock in this kernel: the scalar file() is not refused (README, Security)")
	}
	for _, sql := range refused {
		out, err := run(t, "query", "--data-dir", dataDir, "--log-level", "warn", sql)
		if err == nil {
			t.Errorf("%s answered:\n%s", sql, out)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "Permission denied") && !strings.Contains(msg, "Not enough privileges") {
			t.Errorf("%s: refused for another reason: %v", sql, err)
		}
	}
}
