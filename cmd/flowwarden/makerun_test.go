package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
)

// TestMakeRun runs the README's `make run` as a new user does (on free
// ports, into a data dir of its own) and checks that the demo shows the
// loop: within 90 s of the page answering, findings are in the findings
// table and on the page with their SQL, /metrics counts them (and the
// alerts sent, when Alertmanager is installed), the exfiltration is found
// and its destination held back on the page, and the README's
// dropped-flow and metadata queries return rows.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the demo for up to a minute")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make run needs make (make prereqs installs it)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	listen, replayAddr, amAddr := amtest.FreeAddr(t), amtest.FreeAddr(t), amtest.FreeAddr(t)
	var out bytes.Buffer
	cmd := exec.Command("make", "-s", "-C", root, "run", "DATA_DIR="+dataDir, "LISTEN="+listen, "REPLAY_ADDR="+replayAddr, "AM_ADDR="+amAddr)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		// make, replay, serve and Alertmanager share the process group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("make run output:\n%s", out.String())
		}
	}()

	get := func(path string) string {
		resp, err := http.Get("http://" + listen + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return ""
		}
		return string(b)
	}
	// The first build can take minutes; the clock starts when the page answers.
	buildBy := time.Now().Add(10 * time.Minute)
	for get("/") == "" {
		select {
		case <-exited:
			t.Fatal("make run ended before the page answered")
		case <-time.After(time.Second):
		}
		if time.Now().After(buildBy) {
			t.Fatal("the page did not answer within 10 minutes of make run")
		}
	}
	answered := time.Now()
	_, amErr := os.Stat("/usr/bin/prometheus-alertmanager")
	wantAlerts := amErr == nil
	var stored, page, metrics string
	for {
		stored = queryOne(t, "--data-dir", dataDir, "SELECT count() FROM findings FINAL")
		page, metrics = get("/"), get("/metrics")
		onPage := strings.Contains(page, `<table id="findings">`) && strings.Contains(page, "metadata-access") && strings.Contains(page, "169.254.169.254")
		alerted := !wantAlerts || strings.Contains(metrics, "flowwarden_alerts_sent_total{")
		// The replay keeps the recorded spacing (--keep-spacing): the
		// exfiltration stands out against its baseline, and the page's
		// policies hold its destination back.
		exfiltration := strings.Contains(metrics, `flowwarden_findings_total{detector="egress-spike"`) && strings.Contains(page, "held back: evidence of")
		if stored != "0" && onPage && strings.Contains(metrics, "flowwarden_findings_total{") && alerted && exfiltration {
			break
		}
		if time.Since(answered) > 90*time.Second {
			t.Fatalf("90 s after the page answered: %s findings stored; findings on the page %v; exfiltration found and held back %v; metrics:\n%s", stored, onPage, exfiltration, grepLines(metrics, "flowwarden_findings_total", "flowwarden_alerts"))
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("%s findings stored and shown %s after the page answered", stored, time.Since(answered).Round(time.Second))

	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, b := range sqlBlock.FindAllStringSubmatch(string(readme), -1) {
		sql := b[1]
		if !strings.Contains(sql, "verdict = 'DROPPED'") && !strings.Contains(sql, "metadata.google.internal") {
			continue
		}
		checked++
		res, err := run(t, "query", "--data-dir", dataDir, "--format", "csv", "--log-level", "warn", sql)
		if err != nil || strings.Count(strings.TrimSpace(res), "\n") == 0 {
			t.Errorf("README query returned no rows during make run (%v):\n%s", err, sql)
		}
	}
	if checked != 2 {
		t.Errorf("found %d of the README's dropped-flow and metadata queries, want 2", checked)
	}
}

func grepLines(s string, prefixes ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}
