package enforcer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/hubble"
)

func TestUsageFindsTheLeastPrivilegeGap(t *testing.T) {
	flows := sampleFlows(t)
	g, _ := generate(t, flows, DefaultConfig())
	current, err := LoadDir("../testdata/netpol/current")
	if err != nil || len(current) != 2 {
		t.Fatalf("load: %v (%d policies)", err, len(current))
	}
	usage, err := Usage(current, g)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, u := range usage {
		got[u.Policy+" "+u.Direction+" "+u.Rule] = u.Flows
	}
	if n, ok := got["bookinfo/bookinfo-open ingress from anyone on TCP/3306"]; !ok || n != 0 {
		t.Errorf("the port 3306 rule should be unused: %v", got)
	}
	if n := got["bookinfo/bookinfo-open ingress from namespaces {all} on any port"]; n == 0 {
		t.Errorf("the any-namespace rule carried the bookinfo traffic: %v", got)
	}
}

func TestSemanticDiffNeverTakesObservedTrafficAway(t *testing.T) {
	flows := sampleFlows(t)
	g, res := generate(t, flows, DefaultConfig())
	current, _ := LoadDir("../testdata/netpol/current")
	changes, err := SemanticDiff(context.Background(), current, res.Policies, g)
	if err != nil {
		t.Fatal(err)
	}
	intended := map[string]bool{}
	for _, s := range res.Skipped {
		intended[s.Edge.From.String()+" "+s.Edge.To.String()] = true
	}
	losses := 0
	for _, c := range changes {
		if !c.Gains {
			losses++
			if c.Observed > 0 && !intended[c.From+" "+c.To] {
				t.Errorf("observed traffic loses access: %+v", c)
			}
		}
	}
	if losses == 0 {
		t.Fatal("tightening an allow-all namespace must take unused access away")
	}
}

func TestReportOnSamples(t *testing.T) {
	flows := sampleFlows(t)
	dropped := filepath.Join("..", "testdata", "hubble", "cilium-pr40519-dropped-world.jsonl")
	more, err := hubble.ReadFlows(context.Background(), dropped)
	if err != nil {
		t.Fatal(err)
	}
	flows = append(flows, more...)
	_, res := generate(t, flows, DefaultConfig())
	b := NewReportBuilder()
	for i := range flows {
		b.Add(&flows[i])
	}
	r, err := b.Build(res.Policies, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var md, page strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## bookinfo", "### Top talkers", "### Denied traffic", "cilium-test-5/client", "1.1.1.1"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// Every namespace heading has something under it.
	if empty := regexp.MustCompile(`(?m)^## .*\n\n(## |\z)`).FindString(md.String()); empty != "" {
		t.Errorf("Markdown has an empty section: %q", empty)
	}
	html := page.String()
	for _, want := range []string{`<svg xmlns="http://www.w3.org/2000/svg"`, `data-id="bookinfo/productpage-v1"`, `class="edge forwarded"`, `class="edge dropped"`} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if strings.Contains(html, "<script") {
		t.Error("the report must be static HTML")
	}
	// When no access nobody used is taken away, the summary line says 0
	// and does not end in an empty per-namespace list.
	r.Summary.UnobservedLosses = nil
	page.Reset()
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "nobody was seen using: 0 pair/port combinations</li>") {
		t.Errorf("HTML summary of no unobserved losses: %q", regexp.MustCompile(`Access removed[^<]*<`).FindString(page.String()))
	}
}

// TestSemanticDiffDoesNotDependOnFlowOrder: the diff (with its observed
// counts) is the same whatever order the flows came in. An address seen as
// a node on one edge and as external on another once took its kind, and so
// its observed count, from the map's order.
func TestSemanticDiffDoesNotDependOnFlowOrder(t *testing.T) {
	flows := sampleFlows(t)
	current, _ := LoadDir("../testdata/netpol/current")
	var first string
	for seed := range uint64(8) {
		shuffled := slices.Clone(flows)
		rand.New(rand.NewPCG(seed, 3)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		g, res := generate(t, shuffled, DefaultConfig())
		changes, err := SemanticDiff(context.Background(), current, res.Policies, g)
		if err != nil {
			t.Fatal(err)
		}
		fromAddress := uint64(0)
		for _, c := range changes {
			if _, err := netip.ParseAddr(c.From); err == nil {
				fromAddress += c.Observed
			}
		}
		if fromAddress == 0 {
			t.Fatalf("seed %d: no observed flows from an address in the diff", seed)
		}
		got := fmt.Sprint(changes)
		if first == "" {
			first = got
		} else if got != first {
			t.Fatalf("seed %d: the diff differs from the first order's", seed)
		}
	}
}

// TestReportWriteDir: the report's four files hold what its writers write,
// and UnusedRules counts the unused NetworkPolicy rules (the bookinfo
// policies in force have two) and host firewall rules (one of two).
func TestReportWriteDir(t *testing.T) {
	flows := sampleFlows(t)
	inForce, err := LoadDir("../testdata/netpol/current")
	if err != nil {
		t.Fatal(err)
	}
	b := NewReportBuilder()
	for i := range flows {
		b.Add(&flows[i])
	}
	b.AddHostRules([]HostRule{{Node: "node-1", Rule: "ssh", Handle: 7, Packets: 12}, {Node: "node-1", Rule: "old", Handle: 8}})
	r, err := b.Build(inForce, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if n := r.UnusedRules(); n != 3 {
		t.Errorf("%d unused rules, want 2 NetworkPolicy rules and 1 host rule", n)
	}
	dir := filepath.Join(t.TempDir(), "new", "report")
	if err := r.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	var md, page, js strings.Builder
	_ = r.WriteMarkdown(&md)
	_ = r.WriteHTML(&page)
	_ = r.WriteJSON(&js)
	for name, want := range map[string]string{"report.md": md.String(), "report.html": page.String(), "service-graph.svg": string(r.SVG), "report.json": js.String()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want || len(want) == 0 {
			t.Errorf("%s: %d bytes (%v), want the %d its writer writes", name, len(got), err, len(want))
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != len(ReportFiles) {
		t.Errorf("%d files in the report directory, want %v", len(entries), ReportFiles)
	}
}
