package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// healthOf GETs /healthz or /readyz: the status code and the failures named.
func healthOf(url string) (int, map[string]string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return -1, nil
	}
	defer resp.Body.Close()
	var body struct {
		Failures map[string]string `json:"failures"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Failures
}

// TestServeSealFailureRecoversWithoutRestart makes serve's spool directory
// immutable (chattr +i: no file can be created or renamed in it) while
// flows stream in, then writable again (TestSpoolSealFailureRecovers makes
// the seal itself fail, deterministically). While it lasts /healthz and
// /readyz say storage is failing; afterwards serve goes on by itself and
// ClickHouse ends with every flow the replay server sent, once.
func TestServeSealFailureRecoversWithoutRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		t.Skip("chattr (e2fsprogs) is not installed")
	}
	dataDir := t.TempDir()
	spool := filepath.Join(dataDir, "spool")
	if err := os.MkdirAll(spool, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(chattr, "+i", spool).CombinedOutput(); err != nil {
		t.Skipf("this file system cannot make a directory immutable: %v %s", err, out)
	}
	immutable := true
	setImmutable := func(on bool) {
		flag := map[bool]string{true: "+i", false: "-i"}[on]
		if out, err := exec.Command(chattr, flag, spool).CombinedOutput(); err != nil {
			t.Fatalf("chattr %s: %v %s", flag, err, out)
		}
		immutable = on
	}
	t.Cleanup(func() {
		if immutable {
			_ = exec.Command(chattr, "-i", spool).Run()
		}
	})
	setImmutable(false)

	dsn, _ := chtest.Database(t)
	replay := sampleReplay(t, 150) // 1,916 flows over ~13 s
	listen := amtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", listen, "--data-dir", dataDir,
		"--flush-interval", "1s", "--detect=false", "--log-level", "warn", "--flows-ttl", "0")
	healthz, readyz := "http://"+listen+"/healthz", "http://"+listen+"/readyz"
	waitUntil(t, 30*time.Second, "flows before the fault", func() bool { n, _ := countFlows(t, dsn); return n >= 200 })
	if code, f := healthOf(healthz); code != 200 {
		t.Fatalf("/healthz before the fault: %d %v", code, f)
	}
	waitUntil(t, 30*time.Second, "/readyz to be ok", func() bool { code, _ := healthOf(readyz); return code == 200 })

	// Made immutable while a segment is open (a segment lives 1 s), so
	// that it is its seal that fails first.
	waitUntil(t, 30*time.Second, "an open segment", func() bool {
		open, _ := filepath.Glob(filepath.Join(spool, "*.seg.open"))
		return len(open) > 0
	})
	setImmutable(true)
	// The open segment's seal fails (or, when none was open at that
	// instant, the next append's create): both are the spool failing.
	var failure string
	waitUntil(t, 30*time.Second, "/healthz to report the spool failing", func() bool {
		code, f := healthOf(healthz)
		failure = f["storage"]
		return code == http.StatusServiceUnavailable && (strings.Contains(failure, "spool seal failing") || strings.Contains(failure, "spool append failing"))
	})
	t.Logf("/healthz during the fault: %s", failure)
	time.Sleep(2 * time.Second)
	if code, f := healthOf(healthz); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz 2 s into the fault: %d %v", code, f)
	}
	if code, f := healthOf(readyz); code != http.StatusServiceUnavailable || f["storage"] == "" {
		t.Fatalf("/readyz during the fault: %d %v", code, f)
	}
	stalled, _ := countFlows(t, dsn)

	setImmutable(false)
	waitUntil(t, 30*time.Second, "/healthz to be ok again", func() bool { code, _ := healthOf(healthz); return code == 200 })
	deadline := time.Now().Add(60 * time.Second)
	for n, _ := countFlows(t, dsn); n < uint64(replay.Len()) && time.Now().Before(deadline); n, _ = countFlows(t, dsn) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // duplicates, if any, would land now
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	rows, distinct := countFlows(t, dsn)
	t.Logf("%d flows stored when the fault was lifted; %d at the end", stalled, rows)
	if rows != 1916 || distinct != 1916-67 {
		t.Fatalf("after the fault: %d rows, %d distinct; want 1916 and 1849\n%s", rows, distinct, logs.String())
	}
}
