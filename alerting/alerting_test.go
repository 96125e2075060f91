package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

const alertmanagerBinary = "/usr/bin/prometheus-alertmanager"

// webhook records Alertmanager's notifications.
type webhook struct {
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

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var n notification
	if err := json.NewDecoder(r.Body).Decode(&n); err == nil {
		w.mu.Lock()
		w.msgs = append(w.msgs, n)
		w.mu.Unlock()
	}
}

// find returns the first notification of an alert with the given status.
func (w *webhook) find(alertname, status string) (map[string]string, map[string]string, bool) {
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

type alertmanager struct {
	t    *testing.T
	dir  string
	addr string
	cmd  *exec.Cmd
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startAlertmanager runs the real Alertmanager with a webhook receiver.
func startAlertmanager(t *testing.T, hookURL, addr string, dir string) *alertmanager {
	t.Helper()
	if _, err := os.Stat(alertmanagerBinary); err != nil {
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
	am := &alertmanager{t: t, dir: dir, addr: addr}
	am.cmd = exec.Command(alertmanagerBinary, "--config.file="+filepath.Join(dir, "am.yml"),
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
	t.Cleanup(am.stop)
	return am
}

func (am *alertmanager) stop() {
	if am.cmd.ProcessState == nil {
		_ = am.cmd.Process.Kill()
		_ = am.cmd.Wait()
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func finding(id, detector string, sev schema.Severity, status schema.FindingStatus) schema.Finding {
	return schema.Finding{ID: id, Detector: detector, Severity: sev, Namespace: "bookinfo", Workload: "productpage-v1",
		Summary: "bookinfo/productpage-v1 reached for the cloud metadata service", Start: time.Now().Add(-time.Minute), End: time.Now(),
		Status: status, Query: "SELECT * FROM flows WHERE src_workload = 'productpage-v1'",
		Evidence: schema.Evidence{Window: time.Minute, Flows: 3, Metric: "flows", Observed: 3, Threshold: 1}}
}

func TestCriticalFindingPagesAndResolves(t *testing.T) {
	hook := &webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	addr := freeAddr(t)
	startAlertmanager(t, hs.URL, addr, t.TempDir())

	s, err := New(Config{Alertmanagers: []string{"http://" + addr}, Cluster: "kind-test", ResendInterval: 300 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()

	s.Finding(finding("f1", "metadata-access", schema.SeverityCritical, schema.FindingOpen))
	var labels, ann map[string]string
	waitFor(t, 15*time.Second, "the firing notification", func() bool {
		var ok bool
		labels, ann, ok = hook.find("FlowwardenMetadataAccess", "firing")
		return ok
	})
	want := map[string]string{"alertname": "FlowwardenMetadataAccess", "severity": "critical", "namespace": "bookinfo",
		"workload": "productpage-v1", "detector": "metadata-access", "cluster": "kind-test"}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	for _, k := range []string{"summary", "description", "query", "runbook_url"} {
		if ann[k] == "" {
			t.Errorf("annotation %s missing", k)
		}
	}
	s.Finding(finding("f1", "metadata-access", schema.SeverityCritical, schema.FindingResolved))
	waitFor(t, 15*time.Second, "the resolved notification", func() bool {
		_, _, ok := hook.find("FlowwardenMetadataAccess", "resolved")
		return ok
	})
}

func TestAlertSurvivesAlertmanagerOutage(t *testing.T) {
	hook := &webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	addr := freeAddr(t)
	dir := t.TempDir()
	am := startAlertmanager(t, hs.URL, addr, dir)

	s, err := New(Config{Alertmanagers: []string{"http://" + addr}, ResendInterval: 300 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()

	am.stop()
	// The incident starts and ends while Alertmanager is down.
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingOpen))
	time.Sleep(1500 * time.Millisecond)
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingResolved))
	time.Sleep(500 * time.Millisecond)
	if _, _, ok := hook.find("FlowwardenEgressDenialSpike", "firing"); ok {
		t.Fatal("notified while Alertmanager was down?")
	}
	startAlertmanager(t, hs.URL, addr, dir)
	waitFor(t, 20*time.Second, "the alert after the outage", func() bool {
		_, _, ok := hook.find("FlowwardenEgressDenialSpike", "firing")
		return ok
	})
	waitFor(t, 20*time.Second, "its resolution after the outage", func() bool {
		_, _, ok := hook.find("FlowwardenEgressDenialSpike", "resolved")
		return ok
	})
}

func TestAlertName(t *testing.T) {
	if got := AlertName("cross-namespace-denial"); got != "FlowwardenCrossNamespaceDenial" {
		t.Fatal(got)
	}
}
