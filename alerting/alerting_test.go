package alerting

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
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

// TestAlertSurvivesAlertmanagerOutage: an incident that starts and ends
// while the only Alertmanager is down is kept in memory (the active gauge
// stays at 1 after it resolved, the failed sends are counted), and once
// Alertmanager is back it still notifies: firing first, resolved after.
func TestAlertSurvivesAlertmanagerOutage(t *testing.T) {
	hook := &amtest.Webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	addr := amtest.FreeAddr(t)
	dir := t.TempDir()
	am := amtest.Start(t, hs.URL, addr, dir)

	m := NewMetrics(nil)
	s, err := New(Config{Alertmanagers: []string{"http://" + addr}, ResendInterval: 300 * time.Millisecond}, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	failed := func() float64 { return testutil.ToFloat64(m.Failed.WithLabelValues("http://" + addr)) }
	var mu sync.Mutex
	var deliveries []time.Time // successful POSTs that carried f2
	s.OnDelivered(func(ids []string, at time.Time) {
		if slices.Contains(ids, "f2") {
			mu.Lock()
			deliveries = append(deliveries, at)
			mu.Unlock()
		}
	})

	am.Stop()
	// The incident starts and ends while Alertmanager is down; the sender
	// tries, fails and counts each failure, before and after the resolution.
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingOpen))
	amtest.WaitFor(t, 20*time.Second, "a counted failed send while firing", func() bool { return failed() >= 1 })
	s.Finding(finding("f2", "egress-denial-spike", schema.SeverityCritical, schema.FindingResolved))
	before := failed()
	amtest.WaitFor(t, 20*time.Second, "a counted failed send after the resolution", func() bool { return failed() > before })
	if v := testutil.ToFloat64(m.Active); v != 1 {
		t.Fatalf("active alerts %v while Alertmanager is down, want 1: the resolved incident was dropped undelivered", v)
	}
	if n := testutil.ToFloat64(m.Sent.WithLabelValues("http://" + addr)); n != 0 {
		t.Fatalf("%v alerts counted as sent while Alertmanager was down", n)
	}

	amtest.Start(t, hs.URL, addr, dir)
	amtest.WaitFor(t, 20*time.Second, "the alert after the outage", func() bool {
		_, _, ok := hook.Find("FlowwardenEgressDenialSpike", "firing")
		if ok {
			if _, _, res := hook.Find("FlowwardenEgressDenialSpike", "resolved"); res {
				t.Fatal("resolved notified before (or with) firing: nobody heard of the incident")
			}
		}
		return ok
	})
	amtest.WaitFor(t, 20*time.Second, "its resolution after the outage", func() bool {
		_, _, ok := hook.Find("FlowwardenEgressDenialSpike", "resolved")
		return ok
	})
	amtest.WaitFor(t, 5*time.Second, "the delivered alert to leave memory", func() bool { return testutil.ToFloat64(m.Active) == 0 })
	// The sender itself held the resolution back two resend intervals after
	// the late firing, so that Alertmanager notifies firing whatever its
	// group_wait: the last POST carrying f2 (the resolution) comes at least
	// 600 ms after the first (the firing).
	mu.Lock()
	defer mu.Unlock()
	if len(deliveries) < 2 {
		t.Fatalf("%d deliveries of f2, want the firing and the resolution", len(deliveries))
	}
	if gap := deliveries[len(deliveries)-1].Sub(deliveries[0]); gap < 600*time.Millisecond {
		t.Fatalf("resolution posted %v after the late firing, want at least 2 resend intervals (600ms)", gap)
	}
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
