package main

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/webui"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// judgeFlows judges flows with the project's policy evaluator against the
// policies written in dir: for each flow picked by one of the named
// predicates, whether the policies allow it (every picked flow must get
// the same answer; a predicate that picks nothing fails the test).
func judgeFlows(t *testing.T, dir string, flows []schema.Flow, picks map[string]func(*schema.Flow) bool) map[string]bool {
	t.Helper()
	nps, err := enforcer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := enforcer.NewVerifier(nps)
	if err != nil {
		t.Fatal(err)
	}
	for i := range flows {
		v.Learn(&flows[i])
	}
	out := map[string]bool{}
	for i := range flows {
		f := &flows[i]
		for name, pick := range picks {
			if !pick(f) {
				continue
			}
			d, ok := v.Check(f)
			if !ok {
				continue
			}
			if prev, seen := out[name]; seen && prev != d.Allowed {
				t.Errorf("%s: flows judged both ways", name)
			}
			out[name] = d.Allowed
		}
	}
	for name := range picks {
		if _, ok := out[name]; !ok {
			t.Fatalf("%s: no flow judged", name)
		}
	}
	return out
}

func fromTo(src string, dst func(*schema.Flow) bool) func(*schema.Flow) bool {
	return func(f *schema.Flow) bool {
		return !f.IsReply && f.Verdict == schema.VerdictForwarded && f.Src.Namespace+"/"+f.Src.Workload == src && dst(f)
	}
}

func toAddr(a string) func(*schema.Flow) bool {
	addr := netip.MustParseAddr(a)
	return func(f *schema.Flow) bool { return f.DstIP.Unmap() == addr }
}

func toWorkload(w string) func(*schema.Flow) bool {
	return func(f *schema.Flow) bool { return f.Dst.Namespace+"/"+f.Dst.Workload == w }
}

// On the exfiltration scenarios make run replays, recommend holds the
// exfiltration destination back (the evaluator denies it with the written
// policies) while the same workload's ordinary traffic stays allowed, and
// says why; --allow-flagged allows it again.
func TestRecommendHoldsBackScenarioExfiltration(t *testing.T) {
	for _, sc := range []struct {
		name, workload, dest, ordinary, detector string
	}{
		{"sudden-exfiltration", "bookinfo/reviews-v2", "203.0.113.50", "bookinfo/ratings-v1", "egress-spike"},
		{"slow-exfiltration", "bookinfo/ratings-v1", "198.51.100.7", "", "egress-spike"},
	} {
		t.Run(sc.name, func(t *testing.T) {
			flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, sc.name+".flows.jsonl.gz"))
			if err != nil {
				t.Fatal(err)
			}
			picks := map[string]func(*schema.Flow) bool{"exfiltration": fromTo(sc.workload, toAddr(sc.dest))}
			if sc.ordinary != "" {
				picks["ordinary"] = fromTo(sc.workload, toWorkload(sc.ordinary))
			}
			// Traffic to this workload, and of every other workload, stays allowed.
			picks["to the workload"] = func(f *schema.Flow) bool {
				return !f.IsReply && f.Verdict == schema.VerdictForwarded && f.Dst.Namespace+"/"+f.Dst.Workload == sc.workload && f.Src.Namespace == "bookinfo"
			}
			file := filepath.Join(scenarioDir, sc.name+".jsonl.gz")

			dir := t.TempDir()
			out, err := run(t, "recommend", file, "--out", dir, "-o", "json", "--log-level", "warn")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			got := judgeFlows(t, dir, flows, picks)
			if got["exfiltration"] {
				t.Errorf("the exfiltration %s → %s is allowed by the recommended policies", sc.workload, sc.dest)
			}
			if sc.ordinary != "" && !got["ordinary"] {
				t.Errorf("%s's ordinary traffic to %s is denied", sc.workload, sc.ordinary)
			}
			if !got["to the workload"] {
				t.Errorf("traffic to %s is denied", sc.workload)
			}
			var sum recommendSummary
			if err := json.Unmarshal([]byte(out), &sum); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if len(sum.HeldBack) != 1 {
				t.Fatalf("held back %+v, want the exfiltration alone", sum.HeldBack)
			}
			h := sum.HeldBack[0]
			if h.From != sc.workload || h.To != sc.dest || h.Port != "TCP/443" || len(h.Findings) != 1 ||
				h.Findings[0].Detector != sc.detector || h.Findings[0].Subject != sc.workload || h.Flows < 1000 {
				t.Errorf("held back %+v", h)
			}
			for _, l := range sum.LeftOut {
				if strings.HasPrefix(l.Reason, enforcer.HeldBackPrefix) {
					t.Errorf("a held-back edge under left_out: %+v", l)
				}
			}
			// verify takes it as left out on purpose, not a regression.
			left, err := os.ReadFile(filepath.Join(dir, enforcer.LeftOutFile))
			if err != nil || !strings.Contains(string(left), sc.workload+" → "+sc.dest+" TCP/443") {
				t.Errorf("%s lacks the held-back edge: %v\n%s", enforcer.LeftOutFile, err, left)
			}

			// The table names the edge and the finding.
			out, err = run(t, "recommend", file, "--out", t.TempDir(), "--log-level", "warn")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if want := "  held back: " + sc.workload + " → " + sc.dest + " TCP/443 ("; !strings.Contains(out, want) ||
				!strings.Contains(out, "evidence of "+string(h.Findings[0].Severity)+" "+sc.detector+" on "+sc.workload) {
				t.Errorf("recommend's table lacks %q with its finding:\n%s", want, out)
			}

			// --allow-flagged learns it as before.
			dir = t.TempDir()
			if out, err := run(t, "recommend", file, "--out", dir, "--allow-flagged", "--log-level", "warn"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			} else if strings.Contains(out, "held back") {
				t.Errorf("--allow-flagged held back:\n%s", out)
			}
			if got := judgeFlows(t, dir, flows, picks); !got["exfiltration"] {
				t.Errorf("with --allow-flagged the exfiltration is still denied")
			}
		})
	}
}

// enforce's pull request body lists the held-back edge with its finding.
func TestEnforceListsHeldBackEdges(t *testing.T) {
	repo, _ := initRepo(t)
	body := filepath.Join(t.TempDir(), "body.md")
	out, err := run(t, "enforce", "--repo", repo, "--branch", "flowwarden/policies", "--pr-body", body, "--log-level", "warn",
		filepath.Join(scenarioDir, "sudden-exfiltration.jsonl.gz"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### Held back: evidence of an attack", "1 observed edges are **not allowed**",
		"| bookinfo/reviews-v2 → 203.0.113.50 TCP/443 | 5000 | egress-spike | critical | bookinfo/reviews-v2 | 5000 | 2026-03-02T09:30:00Z to 2026-03-02T09:31:00Z |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("PR body lacks %q:\n%s", want, b)
		}
	}
	pol, err := os.ReadFile(filepath.Join(repo, "policies", "bookinfo", "reviews-v2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(pol), "203.0.113.50") {
		t.Errorf("the committed policy allows the exfiltration:\n%s", pol)
	}
}

// The report's recommended policies hold the exfiltration back too, with
// the finding in report.json.
func TestReportHoldsBackFlaggedEdges(t *testing.T) {
	dir := t.TempDir()
	if out, err := run(t, "report", filepath.Join(scenarioDir, "sudden-exfiltration.jsonl.gz"), "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	} else if !strings.Contains(out, "1 observed edges held back from the recommended policies") {
		t.Errorf("report's summary does not say what it held back:\n%s", out)
	}
	js, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Summary struct {
			WouldDeny []enforcer.DeniedEdge `json:"observed_would_deny"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range doc.Summary.WouldDeny {
		if d.From == "bookinfo/reviews-v2" && strings.HasPrefix(d.To, "203.0.113.50") && len(d.Findings) == 1 && d.Findings[0].Detector == "egress-spike" {
			found = true
		}
	}
	if !found {
		t.Errorf("report.json's observed_would_deny lacks the held-back exfiltration: %+v", doc.Summary.WouldDeny)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	if !strings.Contains(string(md), "held back: evidence of critical egress-spike on bookinfo/reviews-v2") {
		t.Errorf("report.md does not say why the exfiltration is denied:\n%s", md)
	}
}

// On the breach scenarios (fixtures of schema.Flow) the engine's findings
// hold back what they are about: the beacon's peer, the scan's new edges,
// and nothing on the look-alikes; the policies are proven (Recommend), and
// the scanning workload keeps its ordinary traffic.
func TestRecommendHoldsBackBreachScenarios(t *testing.T) {
	for _, sc := range []struct {
		name string
		// held: substrings every held-back edge key has; n: how many at least.
		held string
		n    int
		// kept: edge keys that stay allowed.
		kept []string
	}{
		{name: "breach-lookalikes"},
		{name: "beacon-c2", held: "shop/payments-gw → 203.0.113.77 ", n: 1},
		{name: "lateral-scan", held: "shop/cart → ", n: 100, kept: []string{"shop/cart → 198.51.100.30 TCP/443"}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, sc.name+".flows.jsonl.gz"))
			if err != nil {
				t.Fatal(err)
			}
			var found analyze.Collector
			eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := eng.Write(context.Background(), flows...); err != nil {
				t.Fatal(err)
			}
			eng.Flush()
			g := enforcer.NewGraph()
			for i := range flows {
				g.Add(&flows[i])
			}
			cfg := enforcer.DefaultConfig()
			cfg.Flagged = found.Findings()
			res, err := enforcer.Recommend(g, cfg) // proves held-back edges denied, the rest allowed
			if err != nil {
				t.Fatal(err)
			}
			held := res.HeldBack()
			if len(held) < sc.n || sc.n == 0 && len(held) > 0 {
				t.Fatalf("%d edges held back, want %d or more: %+v", len(held), sc.n, held)
			}
			heldKeys := map[string]bool{}
			for _, s := range held {
				heldKeys[enforcer.EdgeKey(s.Edge)] = true
				if !strings.Contains(enforcer.EdgeKey(s.Edge), sc.held) {
					t.Errorf("held back %s (%s)", enforcer.EdgeKey(s.Edge), s.Reason)
				}
			}
			for _, k := range sc.kept {
				if _, ok := g.Edges[edgeByKey(t, g, k)]; !ok || heldKeys[k] {
					t.Errorf("%s is not kept", k)
				}
			}
		})
	}
}

func edgeByKey(t *testing.T, g *enforcer.Graph, key string) enforcer.Edge {
	t.Helper()
	for e := range g.Edges {
		if enforcer.EdgeKey(e) == key {
			return e
		}
	}
	t.Fatalf("no edge %s", key)
	return enforcer.Edge{}
}

// Every detector the engine runs has a hold-back rule, for NetworkPolicies
// and for Istio AuthorizationPolicies (a new detector must say which
// edges and which inbound requests its findings are about, or why none).
func TestHoldBackRulesCoverDetectors(t *testing.T) {
	eng, err := analyze.NewEngine(analyze.DefaultConfig(), &analyze.Collector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(eng.Detectors(), analyze.DropRateDetector) {
		if rule, known := enforcer.HoldBackRule(d); !known || rule == "" {
			t.Errorf("detector %s has no hold-back rule in enforcer", d)
		}
		if rule, known := enforcer.IstioHoldBackRule(d); !known || rule == "" || rule == "none: " {
			t.Errorf("detector %s has no hold-back rule for --flavor istio in enforcer", d)
		}
	}
}

// Over stored history recommend runs the detectors over the window's
// flows (as detect --since) and holds the exfiltration back too.
func TestRecommendHoldsBackOverStoredHistory(t *testing.T) {
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, "sudden-exfiltration.flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	dsn := storeFlows(t, flows)
	ctx := context.Background()
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	window := []string{"--clickhouse", dsn, "--since", scenarioStart.Add(-time.Hour).Format(time.RFC3339),
		"--until", scenarioStart.Add(3 * time.Hour).Format(time.RFC3339), "--log-level", "warn"}
	dir := t.TempDir()
	out, err := run(t, append([]string{"recommend", "--out", dir, "-o", "json"}, window...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var sum recommendSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(sum.HeldBack) != 1 || sum.HeldBack[0].From != "bookinfo/reviews-v2" || sum.HeldBack[0].To != "203.0.113.50" ||
		len(sum.HeldBack[0].Findings) != 1 || sum.HeldBack[0].Findings[0].Detector != "egress-spike" {
		t.Fatalf("held back over stored history: %+v", sum.HeldBack)
	}
	got := judgeFlows(t, dir, flows, map[string]func(*schema.Flow) bool{
		"exfiltration": fromTo("bookinfo/reviews-v2", toAddr("203.0.113.50")),
		"ordinary":     fromTo("bookinfo/reviews-v2", toWorkload("bookinfo/ratings-v1")),
	})
	if got["exfiltration"] || !got["ordinary"] {
		t.Errorf("over stored history: exfiltration allowed %v, ordinary traffic allowed %v", got["exfiltration"], got["ordinary"])
	}
	out, err = run(t, append([]string{"recommend", "--out", t.TempDir(), "-o", "json", "--allow-flagged"}, window...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || len(sum.HeldBack) != 0 {
		t.Errorf("--allow-flagged over stored history held back %+v (%v)", sum.HeldBack, err)
	}

	// serve's page: the findings serve stored come back with the evidence
	// the hold-back rules read, and its recommendation holds the
	// exfiltration back.
	var found analyze.Collector
	eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Write(ctx, flows...); err != nil {
		t.Fatal(err)
	}
	eng.Flush()
	fs := clickhouse.NewFindingStore(conn, nil, nil)
	want := found.Findings()
	for _, f := range want {
		fs.Finding(f)
	}
	if err := fs.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reader := clickhouse.NewReader(conn)
	stored, err := reader.Findings(ctx, scenarioStart, scenarioStart.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || stored[0].ID != want[0].ID || stored[0].Evidence.Baseline != want[0].Evidence.Baseline ||
		stored[0].Evidence.Window != want[0].Evidence.Window || stored[0].Evidence.Metric != want[0].Evidence.Metric ||
		stored[0].Evidence.Flows != want[0].Evidence.Flows || !stored[0].Start.Equal(want[0].Start) || !stored[0].End.Equal(want[0].End) {
		t.Fatalf("stored findings read back as %+v, want %+v", stored, want)
	}
	if none, err := reader.Findings(ctx, scenarioStart.Add(2*time.Hour), scenarioStart.Add(3*time.Hour)); err != nil || len(none) != 0 {
		t.Errorf("findings of a later window: %+v (%v)", none, err)
	}
	page := newPage(webui.Config{Now: func() time.Time { return scenarioStart.Add(time.Hour) }, Window: 2 * time.Hour},
		enforcer.DefaultConfig(), false, reader, nil)
	rec := httptest.NewRecorder()
	page.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	if !strings.Contains(string(body), `<li id="held-back">`) {
		t.Errorf("the page over the store holds nothing back:\n%s", body)
	}
}

// flaggedStore is a fileStore that lists findings too, as storage does.
type flaggedStore struct {
	fileStore
	findings []schema.Finding
}

func (s flaggedStore) Findings(context.Context, time.Time, time.Time) ([]schema.Finding, error) {
	return s.findings, nil
}

// The page's recommended policies hold back what the stored findings flag
// (serve --allow-flagged: not), and the page says so.
func TestPageHoldsBackFlaggedEdges(t *testing.T) {
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, "sudden-exfiltration.flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	var found analyze.Collector
	eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Write(context.Background(), flows...); err != nil {
		t.Fatal(err)
	}
	eng.Flush()
	var last time.Time
	for _, f := range flows {
		if f.Time.After(last) {
			last = f.Time
		}
	}
	store := flaggedStore{fileStore{flows}, found.Findings()}
	for _, allow := range []bool{false, true} {
		page := newPage(webuiConfig(last), enforcer.DefaultConfig(), allow, store, nil)
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		var policy string
		for _, m := range pagePolicy.FindAllStringSubmatch(string(body), -1) {
			if html.UnescapeString(m[1]) == "bookinfo/flowwarden-reviews-v2" {
				policy = html.UnescapeString(m[2])
			}
		}
		if policy == "" {
			t.Fatalf("allow-flagged %v: no policy for reviews-v2 on the page:\n%s", allow, body)
		}
		says := strings.Contains(string(body), `<li id="held-back">`) &&
			strings.Contains(html.UnescapeString(string(body)), "held back: evidence of critical egress-spike on bookinfo/reviews-v2")
		if allows := strings.Contains(policy, "203.0.113.50"); allows != allow || says == allow {
			t.Errorf("allow-flagged %v: the page's policy allows the exfiltration: %v, the page lists it held back: %v", allow, allows, says)
		}
	}
}

// recommend --flavor cilium --l7 leaves the tunnel's names out of the DNS
// rules (the one place a policy can stop a DNS tunnel), keeping the
// workload's other names; without the findings they are listed.
func TestCiliumL7HoldsBackTunnelNames(t *testing.T) {
	for _, name := range []string{"dns-tunnel-fast", "dns-tunnel-slow-drip"} {
		t.Run(name, func(t *testing.T) {
			flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, name+".flows.jsonl.gz"))
			if err != nil {
				t.Fatal(err)
			}
			var found analyze.Collector
			eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := eng.Write(context.Background(), flows...); err != nil {
				t.Fatal(err)
			}
			eng.Flush()
			var tunnel schema.Finding
			for _, f := range found.Findings() {
				if f.Detector == "dns-tunnel" {
					tunnel = f
				}
			}
			if tunnel.Peer == "" {
				t.Fatal("no dns-tunnel finding")
			}
			workload := tunnel.Namespace + "/" + tunnel.Workload
			for _, flagged := range [][]schema.Finding{found.Findings(), nil} {
				g := enforcer.NewGraph()
				obs := enforcer.NewL7Observations()
				for i := range flows {
					g.Add(&flows[i])
					obs.Add(&flows[i])
				}
				cfg := enforcer.DefaultConfig()
				cfg.Flagged = flagged
				res, err := enforcer.Recommend(g, cfg)
				if err != nil {
					t.Fatal(err)
				}
				cps := enforcer.ToCilium(res, g)
				l7 := enforcer.DefaultL7Config()
				l7.Flagged = flagged
				notes, err := enforcer.RecommendCiliumL7(cps, obs, l7, cfg.NamePrefix)
				if err != nil {
					t.Fatal(err)
				}
				var tunnelNames, others, held int
				for _, cp := range cps {
					if cp.Metadata["namespace"] != tunnel.Namespace {
						continue
					}
					for _, eg := range cp.Spec.Egress {
						for _, pr := range eg.ToPorts {
							if pr.Rules == nil {
								continue
							}
							for _, r := range pr.Rules.DNS {
								if strings.HasSuffix(r.MatchPattern, "."+tunnel.Peer) || r.MatchPattern == tunnel.Peer {
									tunnelNames++
								} else {
									others++
								}
							}
						}
					}
				}
				for _, n := range notes {
					if n.Workload == workload {
						held += n.HeldBack
					}
				}
				if flagged != nil && (tunnelNames != 0 || others == 0 || held == 0) {
					t.Errorf("with the findings: %d of the tunnel's names in %s's DNS rules, %d others, %d held back in the notes", tunnelNames, tunnel.Namespace, others, held)
				}
				if flagged == nil && tunnelNames == 0 {
					t.Errorf("without the findings, none of the tunnel's names are listed")
				}
			}
		})
	}
}

// makeRunFiles are the files make run replays (its RUN_FILES).
func makeRunFiles(t *testing.T) []string {
	var files []string
	for _, glob := range []string{"../../testdata/hubble/*.json", "../../testdata/hubble/*.jsonl", "../../testdata/hubble/*.log", scenarioDir + "/*.jsonl.gz"} {
		m, _ := filepath.Glob(glob)
		for _, f := range m {
			if !strings.HasSuffix(f, ".flows.jsonl.gz") {
				files = append(files, f)
			}
		}
	}
	if len(files) < 10 {
		t.Fatalf("make run's files: %v", files)
	}
	return files
}

// Over everything make run replays at once (the samples and every incident
// scenario, recordings of the same hour read one after the other), both
// exfiltration destinations are held back and nothing else of their
// workloads is.
func TestRecommendHoldsBackMakeRunFiles(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, append([]string{"recommend", "--out", dir, "-o", "json", "--log-level", "warn"}, makeRunFiles(t)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var sum recommendSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	held := map[string]string{}
	for _, h := range sum.HeldBack {
		held[h.From+" → "+h.To+" "+h.Port] = h.Findings[0].Detector
	}
	want := map[string]string{"bookinfo/reviews-v2 → 203.0.113.50 TCP/443": "egress-spike", "bookinfo/ratings-v1 → 198.51.100.7 TCP/443": "egress-spike"}
	if len(held) != len(want) {
		t.Errorf("held back %v, want %v", held, want)
	}
	for k, d := range want {
		if held[k] != d {
			t.Errorf("%s held back for %q, want %s", k, held[k], d)
		}
	}
	for _, sc := range []struct{ name, workload, dest string }{
		{"sudden-exfiltration", "bookinfo/reviews-v2", "203.0.113.50"},
		{"slow-exfiltration", "bookinfo/ratings-v1", "198.51.100.7"},
	} {
		flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, sc.name+".flows.jsonl.gz"))
		if err != nil {
			t.Fatal(err)
		}
		got := judgeFlows(t, dir, flows, map[string]func(*schema.Flow) bool{
			"exfiltration": fromTo(sc.workload, toAddr(sc.dest)),
			"ordinary": func(f *schema.Flow) bool {
				return fromTo(sc.workload, func(*schema.Flow) bool { return true })(f) && f.DstIP.Unmap() != netip.MustParseAddr(sc.dest) && f.Dst.Namespace != ""
			},
		})
		if got["exfiltration"] || !got["ordinary"] {
			t.Errorf("%s: exfiltration allowed %v, the workload's ordinary traffic allowed %v", sc.name, got["exfiltration"], got["ordinary"])
		}
	}
}
