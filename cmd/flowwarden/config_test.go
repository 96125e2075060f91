package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// The config path comes from FLOWWARDEN_CONFIG too (read before the
// other FLOWWARDEN_ variables would need it), --config wins over it.
func TestConfigPathFromEnv(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("log-level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("log-level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOWWARDEN_CONFIG", bad)
	if _, err := run(t, "version"); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("FLOWWARDEN_CONFIG ignored: %v", err)
	}
	if _, err := run(t, "--config", good, "version"); err != nil {
		t.Fatalf("--config should win over FLOWWARDEN_CONFIG: %v", err)
	}
}

// A config pointed at the wrong file does not print the file's lines.
func TestConfigErrorsDoNotEchoTheFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"shadow":  "root:$6$Secr3tSalt$Secr3tHash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
		"quoted":  "a: [1\nb: `Secr3t` \"Secr3t\"\n",
		"mapping": "Secr3t key with spaces: 1\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "--config", path, "version")
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if strings.Contains(err.Error(), "Secr3t") || strings.Contains(err.Error(), "19000") {
			t.Errorf("%s: the error echoes the file: %v", name, err)
		}
	}
}

// A huge config is refused before it is read.
func TestConfigSizeCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(200 << 20); err != nil { // sparse: no 200 MB written
		t.Fatal(err)
	}
	f.Close()
	if _, err := run(t, "--config", path, "version"); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("200 MB config: %v", err)
	}
}

func TestNegativeTTLRefused(t *testing.T) {
	for _, args := range [][]string{{"--flows-ttl", "-5h", "version"}, {"--rollup-ttl", "-1s", "version"}} {
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// serve on a non-loopback address warns unless a token or client
// certificates protect it; the token itself is never printed.
func TestServeWarnsAboutAnExposedListenAddress(t *testing.T) {
	dsn, _ := chtest.Database(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "tok-do-not-print-7f3a"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--listen", "0.0.0.0:0"}, true},
		{[]string{"--listen", "0.0.0.0:0", "--auth-token-file", tokenFile}, false},
		{[]string{"--listen", "127.0.0.1:0"}, false},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		args := append([]string{"serve", "--clickhouse", dsn, "--hubble", "127.0.0.1:1", "--data-dir", t.TempDir(), "--detect=false", "--log-level", "debug"}, tc.args...)
		done, logs := runInBackground(ctx, args...)
		waitUntil(t, 60*time.Second, "serve to start", func() bool { return strings.Contains(logs.String(), "msg=serving") })
		cancel()
		<-done
		if got := strings.Contains(logs.String(), "nothing protects it"); got != tc.warn {
			t.Errorf("%v: warned %v, want %v\n%s", tc.args, got, tc.warn, logs.String())
		}
		if strings.Contains(logs.String(), token) {
			t.Errorf("the bearer token was logged:\n%s", logs.String())
		}
	}
}
