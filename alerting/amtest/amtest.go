// Package amtest runs the real Alertmanager (Debian's prometheus-alertmanager)
// with a webhook receiver, for tests.
package amtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema/freeport"
)

// Binary is where Debian installs Alertmanager.
const Binary = "/usr/bin/prometheus-alertmanager"

// Webhook records Alertmanager's notifications.
type Webhook struct {
	mu   sync.Mutex
	msgs []notification
}

type notification struct {
	Status string `json:"status"`
	Alerts []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var n notification
	if err := json.NewDecoder(r.Body).Decode(&n); err == nil {
		w.mu.Lock()
		w.msgs = append(w.msgs, n)
		w.mu.Unlock()
	}
}

// Find returns the first notification of an alert with the given status.
func (w *Webhook) Find(alertname, status string) (map[string]string, map[string]string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		for _, a := range m.Alerts {
			if a.Labels["alertname"] == alertname && a.Status == status {
				return a.Labels, a.Annotations, true
			}
		}
	}
	return nil, nil, false
}

type Alertmanager struct {
	t    testing.TB
	dir  string
	addr string
	cmd  *exec.Cmd
}

// FreeAddr returns a free loopback address, below the ephemeral port
// range so that no outgoing connection takes it before Alertmanager binds.
func FreeAddr(t testing.TB) string {
	ports, err := freeport.Loopback(1)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(ports[0])
}

// Start runs the real Alertmanager with a webhook receiver.
func Start(t testing.TB, hookURL, addr string, dir string) *Alertmanager {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("Alertmanager is needed (apt-get install prometheus-alertmanager): %v", err)
	}
	cfg := fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname, namespace, workload]
  group_wait: 500ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: %s
    send_resolved: true
`, hookURL)
	if err := os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	am := &Alertmanager{t: t, dir: dir, addr: addr}
	am.cmd = exec.Command(Binary, "--config.file="+filepath.Join(dir, "am.yml"),
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	am.cmd.Stdout, am.cmd.Stderr = os.Stderr, os.Stderr
	if err := am.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Alertmanager did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(am.Stop)
	return am
}

func (am *Alertmanager) Stop() {
	if am.cmd.ProcessState == nil {
		_ = am.cmd.Process.Kill()
		_ = am.cmd.Wait()
	}
}

// WaitFor polls cond until it holds or the test times out.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
