package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/alerting"
	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

const runbookBase = "https://github.com/flowwarden/flowwarden/blob/main/deploy/RUNBOOK.md#"

// runbookAnchors are the GitHub anchors of RUNBOOK.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	raw, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, l := range strings.Split(string(raw), "\n") {
		if h, ok := strings.CutPrefix(l, "#"); ok {
			anchors[strings.ReplaceAll(strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#"))), " ", "-")] = true
		}
	}
	return anchors
}

// describedNames records the metric names the collectors describe (vectors
// included, before they have a series).
type describedNames map[string]bool

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d describedNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d[m[1]] = true
		}
	}
	return nil
}
func (d describedNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}
func (d describedNames) Unregister(prometheus.Collector) bool { return false }

// TestHealthAlertsAreSoundAndDocumented: Prometheus's own promtool accepts
// the rules; every flowwarden_ metric an expression reads is one serve
// exports; every alert, and every detector whose findings serve pages
// with, has a runbook section its runbook_url reaches.
func TestHealthAlertsAreSoundAndDocumented(t *testing.T) {
	rule := renderedOne[monitoringv1.PrometheusRule](t, ".")
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is needed (apt-get install prometheus)")
	}
	raw, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	exported := describedNames{}
	clickhouse.NewWriterMetrics(exported)
	clickhouse.NewFindingStore(nil, exported, nil)
	alerting.NewMetrics(exported)
	analyze.NewMetrics(exported)
	exported.MustRegister(ingest.NewStatsCollector(nil))
	anchors := runbookAnchors(t)
	metricRef := regexp.MustCompile(`flowwarden_[a-z_]+`)
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			for _, m := range metricRef.FindAllString(r.Expr.String(), -1) {
				if !exported[m] {
					t.Errorf("alert %s reads %s, which serve does not export", r.Alert, m)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			if !ok || !anchors[anchor] || anchor != strings.ToLower(r.Alert) {
				t.Errorf("alert %s: runbook_url %q has no section in RUNBOOK.md", r.Alert, r.Annotations["runbook_url"])
			}
		}
	}
	if base := alerting.DefaultRunbookURL + "#"; base != runbookBase {
		t.Errorf("findings link to %s, not to RUNBOOK.md", base)
	}
	eng, err := analyze.NewEngine(analyze.DefaultConfig(), &analyze.Collector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(eng.Detectors(), analyze.DropRateDetector) {
		if !anchors[d] {
			t.Errorf("detector %s has no section in RUNBOOK.md", d)
		}
	}
}

// TestHealthAlertsFire runs the PrometheusRule through promtool's rule unit
// tests with an hour of synthetic series: each alert fires when its
// condition has held for its `for`, and not before.
func TestHealthAlertsFire(t *testing.T) {
	rule := renderedOne[monitoringv1.PrometheusRule](t, ".")
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is needed (apt-get install prometheus)")
	}
	dir := t.TempDir()
	raw, _ := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	summaries := map[string]string{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			summaries[r.Alert] = r.Annotations["summary"]
		}
	}
	firing := func(alert, severity string, labels map[string]string, summary string) map[string]any {
		l := map[string]string{"severity": severity}
		for k, v := range labels {
			l[k] = v
		}
		if summary == "" {
			summary = summaries[alert]
		}
		return map[string]any{"exp_labels": l, "exp_annotations": map[string]string{"summary": summary, "runbook_url": runbookBase + strings.ToLower(alert)}}
	}
	type check struct {
		at, alert string
		exp       []map[string]any
	}
	checks := []check{
		// Prometheus stops reaching serve at 21m: down from 26m.
		{"15m", "FlowwardenDown", nil},
		{"40m", "FlowwardenDown", []map[string]any{firing("FlowwardenDown", "critical", nil, "")}},
		// Flows stop at 20m: rate is 0 from 30m, for 15m: fires from 45m.
		{"40m", "FlowwardenIngestStalled", nil},
		{"50m", "FlowwardenIngestStalled", []map[string]any{firing("FlowwardenIngestStalled", "critical", nil, "")}},
		// Insert errors from 10m on: firing 10m later.
		{"15m", "FlowwardenInsertErrors", nil},
		{"30m", "FlowwardenInsertErrors", []map[string]any{firing("FlowwardenInsertErrors", "warning", nil, "")}},
		// No delivery failure at all.
		{"50m", "FlowwardenAlertDeliveryFailing", nil},
		// 25 segments waiting from 10m, for 15m.
		{"20m", "FlowwardenSpoolGrowing", nil},
		{"30m", "FlowwardenSpoolGrowing", []map[string]any{firing("FlowwardenSpoolGrowing", "warning", nil, "the spool holds 25 segments waiting for ClickHouse")}},
		// serve-0's storage fails from 10m on, for 5m: firing from 15m;
		// serve-1's failure lasts 3m and never fires.
		{"14m", "FlowwardenStorageFailing", nil},
		{"20m", "FlowwardenStorageFailing", []map[string]any{firing("FlowwardenStorageFailing", "critical", map[string]string{"pod": "serve-0"}, "")}},
		// 40 flows refused at 30m: firing while within the last 10m.
		{"29m", "FlowwardenFlowsRejected", nil},
		{"35m", "FlowwardenFlowsRejected", []map[string]any{firing("FlowwardenFlowsRejected", "critical", nil, "")}},
		{"50m", "FlowwardenFlowsRejected", nil},
		// Torn records never fire; a corrupt one at 40m does.
		{"35m", "FlowwardenSpoolCorrupt", nil},
		{"45m", "FlowwardenSpoolCorrupt", []map[string]any{firing("FlowwardenSpoolCorrupt", "warning", map[string]string{"kind": "corrupt"}, "")}},
		// DNS names stop at 20m while the detectors keep getting flows: 30m later.
		{"45m", "FlowwardenDNSBlind", nil},
		{"55m", "FlowwardenDNSBlind", []map[string]any{firing("FlowwardenDNSBlind", "warning", nil, "")}},
	}
	var tests []map[string]any
	for _, c := range checks {
		tests = append(tests, map[string]any{"eval_time": c.at, "alertname": c.alert, "exp_alerts": c.exp})
	}
	unit := map[string]any{
		"rule_files":          []string{"rules.yaml"},
		"evaluation_interval": "1m",
		"tests": []map[string]any{{
			"interval": "1m",
			"input_series": []map[string]string{
				{"series": `up{job="flowwarden",namespace="flowwarden"}`, "values": "1x20 0x40"},
				{"series": `flowwarden_ingest_records_total{source="hubble",outcome="accepted"}`, "values": "0+100x20 2000x40"},
				{"series": `flowwarden_clickhouse_insert_errors_total`, "values": "0x10 1+1x50"},
				{"series": `flowwarden_alerts_send_failures_total{alertmanager="http://am:9093"}`, "values": "0x60"},
				{"series": `flowwarden_clickhouse_queued_batches`, "values": "0x10 25x50"},
				{"series": `flowwarden_storage_failing{pod="serve-0"}`, "values": "0x10 1x50"},
				{"series": `flowwarden_storage_failing{pod="serve-1"}`, "values": "0x10 1x3 0x47"},
				{"series": `flowwarden_clickhouse_rejected_flows_total`, "values": "0x30 40x30"},
				{"series": `flowwarden_spool_damaged_records_total{kind="torn"}`, "values": "0x20 1x40"},
				{"series": `flowwarden_spool_damaged_records_total{kind="corrupt"}`, "values": "0x40 1x20"},
				{"series": `flowwarden_dns_visible_workloads`, "values": "4x20 0x40"},
				{"series": `flowwarden_detector_flows_total`, "values": "0+100x60"},
			},
			"alert_rule_test": tests,
		}},
	}
	raw, _ = yaml.Marshal(unit)
	if err := os.WriteFile(filepath.Join(dir, "tests.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", "tests.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n%s", err, out, raw)
	}
}
