package ingest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/ingest"
)

// TestOpenInput: gzip is told by its magic bytes whatever the file's name,
// a plain file named .gz is read as it is, a directory and a damaged gzip
// header are refused with the path named.
func TestOpenInput(t *testing.T) {
	dir := t.TempDir()
	const text = "line one\nline two\n"
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(text))
	w.Close()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, path string }{
		{"gzip without .gz", write("flows.json", gz.Bytes())},
		{"gzip with .gz", write("flows.json.gz", gz.Bytes())},
		{"plain named .gz", write("plain.gz", []byte(text))},
		{"plain", write("plain.json", []byte(text))},
	} {
		r, err := ingest.OpenInput(context.Background(), c.path)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != text {
			t.Errorf("%s: read %q, %v; want %q", c.name, b, err, text)
		}
	}
	if _, err := ingest.OpenInput(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory: %v", err)
	}
	bad := write("bad.gz", []byte{0x1f, 0x8b, 0, 0})
	if _, err := ingest.OpenInput(context.Background(), bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("a damaged gzip header: %v", err)
	}
}
