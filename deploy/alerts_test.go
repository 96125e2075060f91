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
	var rule *monitoringv1.PrometheusRule
	for _, doc := range render(t, ".") {
		if r, ok := strict(t, doc).(*monitoringv1.PrometheusRule); ok {
			rule = r
		}
	}
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
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
