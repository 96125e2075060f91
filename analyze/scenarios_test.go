package analyze

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seedScenarios are the detection scenarios of testdata/scenarios/README.md:
// an hour of the published Hubble samples (shuffled, re-timed) with one
// incident each. cmd/flowwarden's TestScenarioFixtures builds the Hubble
// files from the samples and decodes them with ingest into the fixtures
// (<name>.flows.jsonl.gz) read here, and proves that the two agree.
var seedScenarios = []struct {
	name, about string
	want        []expected // sorted
}{
	{"benign-busy-day", "ten times the usual traffic, steady mix: nothing to report", nil},
	{"metadata-probe", "a compromised productpage pod probes 169.254.169.254 three times (dropped)",
		[]expected{{"metadata-access", "critical", "bookinfo", "productpage-v1", ""}}},
	{"sudden-exfiltration", "reviews-v2 opens 5,000 connections to one outside address in one minute",
		[]expected{{"egress-spike", "critical", "bookinfo", "reviews-v2", ""}}},
	{"slow-exfiltration", "ratings-v1 sends 200 connections a minute to an outside address for 20 minutes",
		[]expected{{"egress-spike", "warning", "bookinfo", "ratings-v1", ""}}},
	{"cross-namespace-scan", "a pod in tenant-a scans bookinfo's pods and ports; policy drops it all",
		[]expected{
			{"cross-namespace-denial", "warning", "tenant-a", "", "bookinfo"},
			{"denial-rate", "warning", "tenant-a", "", ""},
			{"egress-denial-spike", "critical", "tenant-a", "scanner", ""},
		}},
	{"misconfigured-namespace", "a bad policy drops a third of bookinfo's own traffic for ten minutes",
		[]expected{{"denial-rate", "warning", "bookinfo", "", ""}}},
}

// TestScenarios runs the engine with the default configuration (what
// `flowwarden detect FILE` runs) over each seed scenario: the findings
// (detector, severity, subject, window, status) are the golden file's, and
// exactly the hand-written expectations, so regenerating the goldens with
// -update cannot bless a wrong result.
func TestScenarios(t *testing.T) {
	for _, sc := range seedScenarios {
		t.Run(sc.name, func(t *testing.T) {
			found := runScenario(t, DefaultConfig(), scenarioFlows(t, sc.name))
			checkScenario(t, sc.name, found, sc.want, true)
		})
	}
	if *updateScenarios {
		writeSeedReadme(t)
	}
}

func writeSeedReadme(t *testing.T) {
	var b strings.Builder
	b.WriteString("# Detection scenarios\n\n" +
		"Each scenario is an hour of real background traffic (the published Hubble samples,\n" +
		"shuffled and re-timed) with one injected incident. `<name>.jsonl.gz` holds it as Hubble\n" +
		"JSON lines, so every command reads it (`flowwarden detect testdata/scenarios/metadata-probe.jsonl.gz -o table`);\n" +
		"`<name>.flows.jsonl.gz` holds the same flows as ingest decodes them (schema.Flow as compact JSON\n" +
		"lines, read by `analyze/analyzetest`; no command reads them); `<name>.golden.jsonl` the findings\n" +
		"the detectors must report (analyze's TestScenarios runs the engine on the fixture;\n" +
		"`flowwarden detect` on the Hubble file must print the same).\n\n" +
		"Regenerate the Hubble files and fixtures with `go test ./cmd/flowwarden -run TestScenarioFixtures -update`\n" +
		"(its test without -update proves each fixture equals what ingest decodes from its Hubble file),\n" +
		"then the goldens and this page with `go test ./analyze -run '^TestScenarios$' -args -update`.\n" +
		"The breach scenarios ([BREACH.md](BREACH.md)) exist only as fixtures. To ingest these only:\n" +
		"`flowwarden ingest $(ls testdata/scenarios/*.jsonl.gz | grep -v '\\.flows\\.')`.\n\n" +
		"| scenario | incident | expected findings |\n|---|---|---|\n")
	for _, sc := range seedScenarios {
		var ws []string
		for _, w := range sc.want {
			ws = append(ws, fmt.Sprintf("%s %s %s", w.Severity, w.Detector, strings.Trim(w.Namespace+"/"+w.Workload, "/")))
		}
		if len(ws) == 0 {
			ws = []string{"none"}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", sc.name, sc.about, strings.Join(ws, "; "))
	}
	if err := os.WriteFile(filepath.Join(scenarioDir, "README.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
