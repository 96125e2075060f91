package main

import (
	"strings"
	"testing"
)

// TestQueryCannotReadHostFiles: `flowwarden query` refuses file() and the
// table functions that reach outside the database by name first; behind
// that, on the embedded database it runs as the read-only user on a server
// confined to its data path (the server-side refusals are shown by
// schema/clickhouse and schema/clickhouse/embedded tests, past this check).
// A plain query still answers.
func TestQueryCannotReadHostFiles(t *testing.T) {
	dataDir := t.TempDir()
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
