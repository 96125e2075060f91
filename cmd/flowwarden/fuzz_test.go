package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfig feeds arbitrary YAML to the config loader: it must reject what
// it cannot use with an error, never panic.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{"clickhouse: clickhouse://h:9000/db\nlog-level: debug\n", "flows-ttl: 24h\n", "log-level: [a, b]\n",
		"batch-size: -1\n", "{", "- 1\n- 2\n", "hubble-tls: true\nhubble: relay:443\n", "flows-ttl: 1e400h\n", "\x00"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		root := newRootCommand()
		serve, _, err := root.Find([]string{"serve"})
		if err != nil {
			t.Fatal(err)
		}
		_ = serve.ParseFlags(nil)
		_ = applyConfig(serve, path) // an error is fine; a panic is not
	})
}
