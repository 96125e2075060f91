package alerting

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func finding(id, detector string, sev schema.Severity, status schema.FindingStatus) schema.Finding {
	return schema.Finding{ID: id, Detector: detector, Severity: sev, Namespace: "bookinfo", Workload: "productpage-v1",
		Summary: "bookinfo/productpage-v1 reached for the cloud metadata service", Start: time.Now().Add(-time.Minute), End: time.Now(),
		Status: status, Query: "SELECT * FROM flows WHERE src_workload = 'productpage-v1'",
		Evidence: schema.Evidence{Window: time.Minute, Flows: 3, Metric: "flows", Observed: 3, Threshold: 1}}
}

func TestCriticalFindingPagesAndResolves(t *testing.T) {
	hook := &amtest.Webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	addr := amtest.FreeAddr(t)
	amtest.Start(t, hs.URL, addr, t.TempDir())

	s, err := New(Config{Alertmanagers: []string{"http://" + addr}, Cluster: "kind-test", ResendInterval: 300 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()

	s.Finding(finding("f1", "metadata-access", schema.SeverityCritical, schema.FindingOpen))
	var labels, ann map[string]string
	amtest.WaitFor(t, 15*time.Second, "the firing notification", func() bool {
		var ok bool
		labels, ann, ok = hook.Find("FlowwardenMetadataAccess", "firing")
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
	amtest.WaitFor(t, 15*time.Second, "the resolved notification", func() bool {
		_, _, ok := hook.Find("FlowwardenMetadataAccess", "resolved")
		return ok
	})
}

func TestAlertSurvivesAlertmanagerOutage(t *testing.T) {
	hook := &amtest.Webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	addr := amtest.FreeAddr(t)
	dir := t.TempDir()
	am := amtest.Start(t, hs.URL, addr, dir)

	s, err := New(Config{Alertmanagers: []string{"http://" + addr}, ResendInterval: 300 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()

	am.Stop()
	// The incident starts and ends while Alertmanager is down.
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingOpen))
	time.Sleep(1500 * time.Millisecond)
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingResolved))
	time.Sleep(500 * time.Millisecond)
	if _, _, ok := hook.Find("FlowwardenEgressDenialSpike", "firing"); ok {
		t.Fatal("notified while Alertmanager was down?")
	}
	amtest.Start(t, hs.URL, addr, dir)
	amtest.WaitFor(t, 20*time.Second, "the alert after the outage", func() bool {
		_, _, ok := hook.Find("FlowwardenEgressDenialSpike", "firing")
		return ok
	})
	amtest.WaitFor(t, 20*time.Second, "its resolution after the outage", func() bool {
		_, _, ok := hook.Find("FlowwardenEgressDenialSpike", "resolved")
		return ok
	})
}

func TestAlertName(t *testing.T) {
	if got := AlertName("cross-namespace-denial"); got != "FlowwardenCrossNamespaceDenial" {
		t.Fatal(got)
	}
}

func TestAlertmanagerURLsAreCheckedWithoutEchoingSecrets(t *testing.T) {
	for _, u := range []string{"http://admin:hunter2@am:9093", "ftp://am", "http//hunter2@am"} {
		_, err := New(Config{Alertmanagers: []string{"http://ok:9093", u}}, nil, nil)
		if err == nil {
			t.Errorf("%s accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	// Each Alertmanager's counters exist from the start at 0, so that
	// rate() sees the first failure.
	m := NewMetrics(nil)
	if _, err := New(Config{Alertmanagers: []string{"http://am:9093"}}, m, nil); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.Failed); n != 1 {
		t.Errorf("%d failure series before any send, want 1 at 0", n)
	}
	if v := testutil.ToFloat64(m.Failed.WithLabelValues("http://am:9093")); v != 0 {
		t.Errorf("failures start at %v", v)
	}
}
