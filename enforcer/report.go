package enforcer

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// ReportBuilder collects a window of flows for the least-privilege report.
type ReportBuilder struct {
	Graph  *Graph              // forwarded traffic
	Denied map[Edge]*EdgeStats // dropped traffic
	From   time.Time           // first flow seen
	To     time.Time           // last flow seen

	// Config generates the recommendation the blast radius is measured
	// for (nil: DefaultConfig).
	Config *Config

	// Cilium are the CiliumNetworkPolicies in force: their allow rules
	// count in the unused rules and the policy figures (CiliumUsage).
	Cilium []CiliumNetworkPolicy

	// Mesh is the mTLS coverage of the same flows per namespace (cmd
	// fills it from analyze.MeshReport); MeshPolicies says whether the
	// PeerAuthentications in force were read.
	Mesh         []schema.MeshNamespace
	MeshPolicies bool

	hostRules []HostRule
}

// NewReportBuilder returns an empty builder.
func NewReportBuilder() *ReportBuilder {
	b := &ReportBuilder{Graph: NewGraph(), Denied: map[Edge]*EdgeStats{}}
	b.Graph.deniedSink = b.Denied
	return b
}

// Add records a flow.
func (b *ReportBuilder) Add(f *schema.Flow) { b.AddGroup(f, 1, f.Time, f.Time) }

// AddGroup records n flows alike but for their times (and source ports),
// seen from first to last.
func (b *ReportBuilder) AddGroup(f *schema.Flow, n uint64, first, last time.Time) {
	if b.From.IsZero() || first.Before(b.From) {
		b.From = first
	}
	if last.After(b.To) {
		b.To = last
	}
	if f.Verdict == schema.VerdictDropped {
		// Denied requests, each end learning as with forwarded ones;
		// a denied reply is no report line.
		b.Graph.listening.Learn(f)
		b.Graph.add(f, n, first, last, true)
		return
	}
	b.Graph.AddGroup(f, n, first, last)
}

// EdgeRow is one line of a report table.
type EdgeRow struct {
	From  string    `json:"from"`
	To    string    `json:"to"`
	Port  string    `json:"port"`
	Flows uint64    `json:"flows"`
	First time.Time `json:"first_seen"`
	Last  time.Time `json:"last_seen"`
}

// NamespaceReport is the report of one namespace.
type NamespaceReport struct {
	Name       string      `json:"name"`
	Unused     []RuleUsage `json:"unused_rules"`
	Used       int         `json:"used_rules"`
	TopTalkers []EdgeRow   `json:"top_talkers"`
	Denied     []EdgeRow   `json:"denied"`
	NewEdges   []EdgeRow   `json:"new_edges"`
}

// HostRule is one counted accept rule of a node's host firewall and the
// packets it let in over the report's window.
type HostRule struct {
	Node    string `json:"node"`
	Rule    string `json:"rule"` // its comment (what it allows and why)
	Handle  uint64 `json:"handle"`
	Packets uint64 `json:"packets"`
}

// HostReport is the least-privilege gap of one node's host firewall.
type HostReport struct {
	Node   string     `json:"node"`
	Unused []HostRule `json:"unused_rules"`
	Used   int        `json:"used_rules"`
}

// Report is the quarterly least-privilege report.
type Report struct {
	Generated time.Time `json:"generated"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Policies  int       `json:"policies"`
	// NotJudged says what of the policies in force the figures leave out.
	NotJudged  []string          `json:"not_judged,omitempty"`
	Namespaces []NamespaceReport `json:"namespaces"`
	// Hosts is set when host firewall counters were given (AddHostRules).
	Hosts []HostReport `json:"hosts"`
	// BlastRadius compares the policies in force with the recommended
	// ones (ComputeBlastRadius); the sums and the reduction follow.
	BlastRadius          []BlastRadiusRow `json:"blast_radius"`
	BlastRadiusBefore    int              `json:"blast_radius_before"`
	BlastRadiusAfter     int              `json:"blast_radius_after"`
	BlastRadiusReduction float64          `json:"blast_radius_reduction_percent"`
	// Summary leads the report (Summarize against the recommendation).
	Summary *Summary `json:"summary"`
	// DroppedEdges and DroppedFlows are what the datapath itself denied.
	DroppedEdges int    `json:"dropped_edges"`
	DroppedFlows uint64 `json:"dropped_flows"`
	// MTLS is the mTLS coverage section.
	MTLS *MTLSReport   `json:"mtls_coverage"`
	SVG  template.HTML `json:"-"`
	// Map is the service map for report.html (grouped by namespace above
	// GroupAbove workloads).
	Map template.HTML `json:"-"`
}

// NewEdgeWindow: edges first seen this close to the end of the window are "new".
const NewEdgeWindow = 30 * 24 * time.Hour

// AddHostRules adds the host firewall rules with their use in the window:
// the report lists, per node, those that let nothing in.
func (b *ReportBuilder) AddHostRules(rules []HostRule) { b.hostRules = append(b.hostRules, rules...) }

// Build assembles the report against the policies in force.
func (b *ReportBuilder) Build(policies []networkingv1.NetworkPolicy, now time.Time) (*Report, error) {
	b.Graph.Settle()
	usage, err := Usage(policies, b.Graph)
	if err != nil {
		return nil, err
	}
	var cUsage []RuleUsage
	var notJudged []string
	if len(b.Cilium) > 0 {
		if cUsage, notJudged, err = ciliumUsage(b.Cilium, b.Graph); err != nil {
			return nil, err
		}
		usage = append(usage, cUsage...)
		notJudged = append(notJudged, fmt.Sprintf("the blast radius and the summary's default-deny coverage and access changes count NetworkPolicies only, not the %d Cilium policies (which count in the rules in force and the unused rules)", len(b.Cilium)))
	}
	r := &Report{Generated: now, From: b.From, To: b.To, Policies: len(policies) + len(b.Cilium), NotJudged: notJudged}
	byNS := map[string]*NamespaceReport{}
	ns := func(name string) *NamespaceReport {
		if name == "" {
			name = "(outside the cluster)"
		}
		if byNS[name] == nil {
			byNS[name] = &NamespaceReport{Name: name}
		}
		return byNS[name]
	}
	for _, u := range usage {
		n, _, _ := strings.Cut(u.Policy, "/")
		if u.Flows == 0 {
			ns(n).Unused = append(ns(n).Unused, u)
		} else {
			ns(n).Used++
		}
	}
	for e, st := range b.Graph.Edges {
		row := EdgeRow{From: e.From.String(), To: peerLabel(e.To), Port: fmt.Sprintf("%s/%d", e.Protocol, e.Port), Flows: st.Flows, First: st.First, Last: st.Last}
		owner := ns(nsOf(e.From))
		if e.From.Kind != PeerWorkload {
			owner = ns(nsOf(e.To))
		}
		owner.TopTalkers = append(owner.TopTalkers, row)
		if st.First.After(b.To.Add(-NewEdgeWindow)) && b.To.Sub(b.From) > NewEdgeWindow {
			owner.NewEdges = append(owner.NewEdges, row)
		}
	}
	for e, st := range b.Denied {
		row := EdgeRow{From: e.From.String(), To: peerLabel(e.To), Port: fmt.Sprintf("%s/%d", e.Protocol, e.Port), Flows: st.Flows, First: st.First, Last: st.Last}
		owner := ns(nsOf(e.To))
		if e.To.Kind != PeerWorkload {
			owner = ns(nsOf(e.From))
		}
		owner.Denied = append(owner.Denied, row)
	}
	for _, k := range sortedKeys(byNS) {
		n := byNS[k]
		if len(n.Unused)+n.Used+len(n.TopTalkers)+len(n.Denied)+len(n.NewEdges) == 0 {
			// Only looked up on the way to the owner of an edge: nothing to say.
			continue
		}
		sortRows(n.TopTalkers)
		if len(n.TopTalkers) > 10 {
			n.TopTalkers = n.TopTalkers[:10]
		}
		sortRows(n.Denied)
		sortRows(n.NewEdges)
		r.Namespaces = append(r.Namespaces, *n)
	}
	byNode := map[string]*HostReport{}
	for _, h := range b.hostRules {
		if byNode[h.Node] == nil {
			byNode[h.Node] = &HostReport{Node: h.Node}
		}
		if h.Packets == 0 {
			byNode[h.Node].Unused = append(byNode[h.Node].Unused, h)
		} else {
			byNode[h.Node].Used++
		}
	}
	for _, k := range sortedKeys(byNode) {
		r.Hosts = append(r.Hosts, *byNode[k])
	}
	if len(b.Graph.Workloads) > 0 {
		cfg := DefaultConfig()
		if b.Config != nil {
			cfg = *b.Config
		}
		// The recommended policies are recommend's: generated and proven.
		rec, err := Recommend(b.Graph, cfg)
		if err != nil {
			return nil, err
		}
		br, err := ComputeBlastRadius(policies, rec.Policies, b.Graph)
		if err != nil {
			return nil, err
		}
		r.BlastRadius, r.BlastRadiusBefore, r.BlastRadiusAfter, r.BlastRadiusReduction = br.Rows, br.Before, br.After, br.ReductionPercent()
		rec.BlastRadius = br
		if r.Summary, err = Summarize(context.Background(), b.Graph, policies, rec); err != nil {
			return nil, err
		}
		for _, u := range cUsage {
			r.Summary.RulesInForce++
			if u.Flows == 0 {
				r.Summary.RulesUnused++
				r.Summary.Unused = append(r.Summary.Unused, u)
			}
		}
	}
	r.MTLS = mtlsReport(b.Mesh, b.MeshPolicies, r.Namespaces)
	for _, st := range b.Denied {
		r.DroppedEdges++
		r.DroppedFlows += st.Flows
	}
	r.SVG = template.HTML(ServiceGraphSVG(b.Graph, b.Denied))
	r.Map = template.HTML(ServiceMapHTML(b.Graph, b.Denied, GroupAbove))
	return r, nil
}

// ReportFiles are the files WriteDir writes.
var ReportFiles = []string{"report.md", "report.html", "service-graph.svg", "report.json"}

// WriteDir writes the report into dir (made if missing): report.md,
// report.html (self-contained), service-graph.svg and report.json.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md, page, js strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		return err
	}
	if err := r.WriteHTML(&page); err != nil {
		return err
	}
	if err := r.WriteJSON(&js); err != nil {
		return err
	}
	for i, content := range []string{md.String(), page.String(), string(r.SVG), js.String()} {
		if err := os.WriteFile(filepath.Join(dir, ReportFiles[i]), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// UnusedRules counts the rules in force, NetworkPolicy rules and host
// firewall rules, that carried no observed traffic.
func (r *Report) UnusedRules() int {
	n := 0
	for _, ns := range r.Namespaces {
		n += len(ns.Unused)
	}
	for _, h := range r.Hosts {
		n += len(h.Unused)
	}
	return n
}

// WriteJSON writes every figure of the report as one JSON document
// (report.json): the machine-readable twin of report.md.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func peerLabel(p Peer) string {
	if p.Name != "" {
		return p.Addr.String() + " (" + strings.TrimSuffix(p.Name, ".") + ")"
	}
	return p.String()
}

func sortRows(rows []EdgeRow) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Flows != rows[j].Flows {
			return rows[i].Flows > rows[j].Flows
		}
		return rows[i].From+rows[i].To+rows[i].Port < rows[j].From+rows[j].To+rows[j].Port
	})
}

// WriteMarkdown renders the report as Markdown.
func (r *Report) WriteMarkdown(w io.Writer) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# Least-privilege report\n\nTraffic from %s to %s, against %d policies. Generated %s.\n\n",
		r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339), r.Policies, r.Generated.UTC().Format(time.RFC3339))
	for _, n := range r.NotJudged {
		p("> Not judged: %s.\n\n", n)
	}
	if sm := r.Summary; sm != nil {
		p("## Summary\n\n")
		p("- Namespaces with a default deny: %d of %d in force, %d with the recommended policies\n", sm.DefaultDenyBefore, sm.Namespaces, sm.DefaultDenyAfter)
		p("- Workloads covered by a policy: %d of %d in force, %d with the recommended policies\n", sm.CoveredBefore, sm.Workloads, sm.CoveredAfter)
		p("- Rules in force that carried no observed traffic: %d of %d\n", sm.RulesUnused, sm.RulesInForce)
		p("- Blast radius: %d → %d (%s)\n", sm.BlastBefore, sm.BlastAfter, ChangeWords(sm.BlastReduction))
		p("- Observed traffic the recommended policies would deny: %d edges; the datapath itself dropped %d flows on %d edges\n", len(sm.WouldDeny), r.DroppedFlows, r.DroppedEdges)
		if sm.DiffError == "" {
			p("- Access the recommendation removes that nobody was seen using: %d pair/port combinations", sm.UnobservedLossTotal())
			var parts []string
			for _, ns := range sm.UnobservedLossNamespaces() {
				parts = append(parts, fmt.Sprintf("%s %d", orOutside(ns), sm.UnobservedLosses[ns]))
			}
			if len(parts) > 0 {
				p(" (%s)", strings.Join(parts, ", "))
			}
			p("\n")
		}
		p("\n")
		if len(sm.WouldDeny) > 0 {
			p("### Observed traffic the recommended policies would deny\n\n| from | to | port | flows | why |\n|---|---|---|---|---|\n")
			for _, d := range sm.WouldDeny {
				p("| %s | %s | %s | %d | %s |\n", d.From, d.To, d.Port, d.Flows, d.Why)
			}
			p("\n")
		}
	}
	if len(r.BlastRadius) > 0 {
		p("## Blast radius\n\nWorkloads an attacker holding one workload reaches, directly or by pivoting, any port (outside addresses not counted): "+
			"**%d → %d** summed over %d workloads with the recommended policies: **%s**.\n\n", r.BlastRadiusBefore, r.BlastRadiusAfter, len(r.BlastRadius), ChangeWords(r.BlastRadiusReduction))
		p("| workload | before | after | of |\n|---|---|---|---|\n")
		for _, b := range r.BlastRadius {
			p("| %s | %d | %d | %d |\n", b.Workload, b.Before, b.After, b.Total)
		}
		p("\n")
	}
	if r.MTLS != nil {
		r.MTLS.writeMarkdown(w)
	}
	p("![service graph](service-graph.svg)\n\n")
	table := func(title string, rows []EdgeRow) {
		if len(rows) == 0 {
			return
		}
		p("### %s\n\n| from | to | port | flows | first seen | last seen |\n|---|---|---|---|---|---|\n", title)
		for _, row := range rows {
			p("| %s | %s | %s | %d | %s | %s |\n", row.From, row.To, row.Port, row.Flows, row.First.UTC().Format(time.DateTime), row.Last.UTC().Format(time.DateTime))
		}
		p("\n")
	}
	for _, n := range r.Namespaces {
		p("## %s\n\n", n.Name)
		if len(n.Unused)+n.Used > 0 {
			p("### Allowed but unused (%d of %d rules)\n\n", len(n.Unused), len(n.Unused)+n.Used)
			for _, u := range n.Unused {
				p("- `%s` %s rule %d: %s\n", u.Policy, u.Direction, u.Index+1, u.Rule)
			}
			p("\n")
		}
		table("Top talkers", n.TopTalkers)
		table("Denied traffic", n.Denied)
		table("New edges (first seen in the last 30 days)", n.NewEdges)
	}
	if len(r.Hosts) > 0 {
		p("## Host firewalls\n\n")
		for _, h := range r.Hosts {
			p("### %s: allowed but unused (%d of %d rules)\n\n", h.Node, len(h.Unused), len(h.Unused)+h.Used)
			for _, u := range h.Unused {
				p("- handle %d: %s\n", u.Handle, u.Rule)
			}
			p("\n")
		}
	}
	return nil
}

var reportHTML = template.Must(template.New("report").Funcs(template.FuncMap{
	"change":    ChangeWords,
	"ts":        func(t time.Time) string { return t.UTC().Format(time.DateTime) },
	"inc":       func(i int) int { return i + 1 },
	"orOutside": orOutside,
	"percent":   Percent,
	"modeWords": modeWords,
	"plaintext": PlaintextLine,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flowwarden least-privilege report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1b1b;max-width:1200px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem;text-align:left}
th{background:#f3f3f3}h2{border-bottom:2px solid #333;padding-bottom:.2rem;margin-top:2.5rem}.unused{color:#a15c00}
.graph{border:1px solid #ddd}.graph svg{max-width:100%;height:auto;display:block}
</style></head><body>
<h1>Least-privilege report</h1>
<p>Traffic from {{ts .From}} to {{ts .To}} (UTC), against {{.Policies}} policies. Generated {{ts .Generated}}.</p>
{{with .Summary}}<section id="summary"><h2>Summary</h2><ul>
<li>Namespaces with a default deny: {{.DefaultDenyBefore}} of {{.Namespaces}} in force, {{.DefaultDenyAfter}} with the recommended policies</li>
<li>Workloads covered by a policy: {{.CoveredBefore}} of {{.Workloads}} in force, {{.CoveredAfter}} with the recommended policies</li>
<li>Rules in force that carried no observed traffic: {{.RulesUnused}} of {{.RulesInForce}}</li>
<li>Blast radius: {{.BlastBefore}} → {{.BlastAfter}} ({{change .BlastReduction}})</li>
<li>Observed traffic the recommended policies would deny: {{len .WouldDeny}} edges; the datapath itself dropped {{$.DroppedFlows}} flows on {{$.DroppedEdges}} edges</li>
{{if not .DiffError}}<li>Access removed that nobody was seen using: {{.UnobservedLossTotal}} pair/port combinations{{if .UnobservedLossNamespaces}}; per namespace: {{range $i, $ns := .UnobservedLossNamespaces}}{{if $i}}, {{end}}{{orOutside $ns}} {{index $.Summary.UnobservedLosses $ns}}{{end}}{{end}}</li>{{end}}
</ul>
{{with .WouldDeny}}<h3>Observed traffic the recommended policies would deny</h3><table id="would-deny"><tr><th>from</th><th>to</th><th>port</th><th>flows</th><th>why</th></tr>
{{range .}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{.Port}}</td><td>{{.Flows}}</td><td>{{.Why}}</td></tr>{{end}}</table>{{end}}</section>{{end}}
{{if .BlastRadius}}<section id="blast-radius"><h2>Blast radius</h2>
<p>Workloads an attacker holding one workload reaches, directly or by pivoting, any port (outside addresses not counted):
<strong>{{.BlastRadiusBefore}} → {{.BlastRadiusAfter}}</strong> summed over {{len .BlastRadius}} workloads with the recommended policies:
<strong class="reduction">{{change .BlastRadiusReduction}}</strong>.</p>
<table><tr><th>workload</th><th>before</th><th>after</th><th>of</th></tr>
{{range .BlastRadius}}<tr><td>{{.Workload}}</td><td>{{.Before}}</td><td>{{.After}}</td><td>{{.Total}}</td></tr>{{end}}</table></section>{{end}}
{{with .MTLS}}<section id="mtls-coverage"><h2>mTLS coverage</h2>
{{if .Namespaces}}<p>Inbound mesh requests (logged by the receiving Envoy/Istio sidecar) secured by mutual TLS: <strong>{{percent .Ratio}}</strong> of {{.Requests}}.{{if not .PoliciesGiven}} No policies were given (<code>--policies</code>), so the PeerAuthentications in force are not shown.{{end}}</p>
<table id="mtls"><tr><th>namespace</th><th>requests</th><th>secured by mTLS</th>{{if .PoliciesGiven}}<th>PeerAuthentication</th>{{end}}<th>plaintext received by (requests)</th></tr>
{{range .Namespaces}}<tr><td>{{.Namespace}}</td><td>{{.Total}}</td><td>{{percent .Ratio}}</td>{{if $.MTLS.PoliciesGiven}}<td>{{modeWords .}}</td>{{end}}<td>{{plaintext .}}</td></tr>
{{end}}</table>
{{with .WithoutMeshTraffic}}<p>Left out, no inbound mesh requests seen: {{range $i, $ns := .}}{{if $i}}, {{end}}{{$ns}}{{end}}.</p>{{end}}
{{else}}<p id="no-mesh">No mesh traffic was seen: no inbound request logged by an Envoy/Istio sidecar in the window, so mTLS coverage cannot be judged.</p>{{end}}
</section>{{end}}
<div class="graph" id="service-map">{{.Map}}</div>
{{range .Namespaces}}
<h2>{{.Name}}</h2>
{{if or .Unused .Used}}<h3>Allowed but unused ({{len .Unused}} rules unused, {{.Used}} used)</h3>
<ul>{{range .Unused}}<li class="unused"><code>{{.Policy}}</code> {{.Direction}} rule {{inc .Index}}: {{.Rule}}</li>{{end}}</ul>{{end}}
{{with .TopTalkers}}<h3>Top talkers</h3><table><tr><th>from</th><th>to</th><th>port</th><th>flows</th><th>first seen</th><th>last seen</th></tr>
{{range .}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{.Port}}</td><td>{{.Flows}}</td><td>{{ts .First}}</td><td>{{ts .Last}}</td></tr>{{end}}</table>{{end}}
{{with .Denied}}<h3>Denied traffic</h3><table><tr><th>from</th><th>to</th><th>port</th><th>flows</th><th>first seen</th><th>last seen</th></tr>
{{range .}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{.Port}}</td><td>{{.Flows}}</td><td>{{ts .First}}</td><td>{{ts .Last}}</td></tr>{{end}}</table>{{end}}
{{with .NewEdges}}<h3>New edges (first seen in the last 30 days)</h3><table><tr><th>from</th><th>to</th><th>port</th><th>flows</th><th>first seen</th><th>last seen</th></tr>
{{range .}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{.Port}}</td><td>{{.Flows}}</td><td>{{ts .First}}</td><td>{{ts .Last}}</td></tr>{{end}}</table>{{end}}
{{end}}
{{with .Hosts}}<h2>Host firewalls</h2>
{{range .}}<h3>{{.Node}}: allowed but unused ({{len .Unused}} rules unused, {{.Used}} used)</h3>
<ul>{{range .Unused}}<li class="unused">handle {{.Handle}}: {{.Rule}}</li>{{end}}</ul>{{end}}{{end}}
</body></html>
`))

// WriteHTML renders the report as one self-contained HTML page.
func (r *Report) WriteHTML(w io.Writer) error { return reportHTML.Execute(w, r) }

// ServiceGraphSVG draws workloads as boxes grouped in one column per
// namespace (outside peers in the last column), and edges coloured by
// verdict (green forwarded, red dropped) with thickness by volume.
func ServiceGraphSVG(g *Graph, denied map[Edge]*EdgeStats) string {
	g.Settle()
	type node struct{ x, y float64 }
	columns := map[string][]string{}
	placed := map[string]bool{}
	add := func(p Peer) {
		col, id := nsOf(p), p.String()
		if p.Kind != PeerWorkload {
			col = "~outside"
		}
		if !placed[col+" "+id] {
			placed[col+" "+id] = true
			columns[col] = append(columns[col], id)
		}
	}
	for e := range g.Edges {
		add(e.From)
		add(e.To)
	}
	for e := range denied {
		add(e.From)
		add(e.To)
	}
	const colW, rowH, boxW, boxH, top = 240.0, 46.0, 190.0, 30.0, 50.0
	nodes := map[string]node{}
	cols := sortedKeys(columns)
	height := top
	var b strings.Builder
	var body strings.Builder
	for ci, col := range cols {
		ids := columns[col]
		sort.Strings(ids)
		x := 20 + float64(ci)*colW
		title := col
		if col == "~outside" {
			title = "outside the cluster"
		}
		fmt.Fprintf(&body, `<text x="%.0f" y="28" font-size="14" font-weight="bold">%s</text>`, x, template.HTMLEscapeString(title))
		for i, id := range ids {
			y := top + float64(i)*rowH
			nodes[id] = node{x, y}
			label := id
			if _, name, ok := strings.Cut(id, "/"); ok && col != "~outside" {
				label = name
			}
			fmt.Fprintf(&body, `<g class="node" data-id="%s"><rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" rx="6" fill="#eef3fb" stroke="#4a6fa5"/><text x="%.0f" y="%.0f" font-size="12">%s</text></g>`,
				template.HTMLEscapeString(id), x, y, boxW, boxH, x+8, y+19, template.HTMLEscapeString(label))
			height = max(height, y+boxH+20)
		}
	}
	width := 40 + float64(len(cols))*colW
	edge := func(e Edge, st *EdgeStats, color, verdict string) string {
		a, b := nodes[e.From.String()], nodes[e.To.String()]
		x1, y1 := a.x+boxW, a.y+boxH/2
		x2, y2 := b.x, b.y+boxH/2
		if b.x <= a.x {
			x1, x2 = a.x, b.x+boxW
		}
		w := 1 + math.Log10(float64(st.Flows)+1)
		mx := (x1 + x2) / 2
		return fmt.Sprintf(`<path class="edge %s" d="M%.0f,%.0f C%.0f,%.0f %.0f,%.0f %.0f,%.0f" stroke="%s" stroke-width="%.1f" fill="none" opacity="0.75"><title>%s → %s %s/%d: %d flows</title></path>`,
			verdict, x1, y1, mx, y1, mx, y2, x2, y2, color, w, template.HTMLEscapeString(e.From.String()), template.HTMLEscapeString(e.To.String()), e.Protocol, e.Port, st.Flows)
	}
	var edges []string
	for e, st := range g.Edges {
		edges = append(edges, edge(e, st, "#2e7d32", "forwarded"))
	}
	for e, st := range denied {
		edges = append(edges, edge(e, st, "#c62828", "dropped"))
	}
	sort.Strings(edges)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" id="service-graph">`, width, height, width, height)
	b.WriteString(strings.Join(edges, ""))
	b.WriteString(body.String())
	fmt.Fprintf(&b, `<g font-size="11"><line x1="20" y1="%.0f" x2="50" y2="%.0f" stroke="#2e7d32" stroke-width="3"/><text x="55" y="%.0f">forwarded</text><line x1="140" y1="%.0f" x2="170" y2="%.0f" stroke="#c62828" stroke-width="3"/><text x="175" y="%.0f">dropped</text></g>`,
		height-6, height-6, height-2, height-6, height-6, height-2)
	b.WriteString(`</svg>`)
	return b.String()
}

// GroupAbove is the number of workloads above which the service map shows
// namespaces, each opening onto its own workloads.
const GroupAbove = 40

// ServiceMapHTML is the service map for a page: ServiceGraphSVG up to
// groupAbove workloads; above, one box per namespace with the traffic
// between namespaces, then per namespace a <details> that opens onto the
// workload-level map of the traffic into and out of it. No scripts.
func ServiceMapHTML(g *Graph, denied map[Edge]*EdgeStats, groupAbove int) string {
	g.Settle()
	if len(g.Workloads) <= groupAbove {
		return ServiceGraphSVG(g, denied)
	}
	count := map[string]int{}
	for _, w := range g.Workloads {
		count[w.Namespace]++
	}
	nsPeer := func(p Peer) Peer {
		if p.Kind != PeerWorkload {
			return p
		}
		ns := nsOf(p)
		return Peer{Kind: PeerWorkload, Workload: fmt.Sprintf("%s/%d workloads", ns, count[ns])}
	}
	top := NewGraph()
	topDenied := map[Edge]*EdgeStats{}
	fold := func(src map[Edge]*EdgeStats, dst map[Edge]*EdgeStats) {
		for e, st := range src {
			f, t := nsPeer(e.From), nsPeer(e.To)
			if f.Kind != PeerWorkload {
				f = Peer{Kind: PeerExternal, Addr: netip.IPv4Unspecified()}
			}
			if t.Kind != PeerWorkload {
				t = Peer{Kind: PeerExternal, Addr: netip.IPv4Unspecified()}
			}
			addEdgeStats(dst, Edge{From: f, To: t, Protocol: "any"}, st.Flows, st.First, st.Last)
		}
	}
	fold(g.Edges, top.Edges)
	fold(denied, topDenied)
	var b strings.Builder
	fmt.Fprintf(&b, `<p class="map-note">%d workloads in %d namespaces: one box per namespace (every address outside the cluster as 0.0.0.0); open a namespace below for its workloads.</p>`, len(g.Workloads), len(count))
	b.WriteString(ServiceGraphSVG(top, topDenied))
	for _, ns := range sortedKeys(count) {
		sub := NewGraph()
		subDenied := map[Edge]*EdgeStats{}
		for e, st := range g.Edges {
			if nsOf(e.From) == ns || nsOf(e.To) == ns {
				sub.Edges[e] = st
			}
		}
		for e, st := range denied {
			if nsOf(e.From) == ns || nsOf(e.To) == ns {
				subDenied[e] = st
			}
		}
		fmt.Fprintf(&b, `<details class="ns-map" data-namespace="%s"><summary>%s: %d workloads</summary>%s</details>`,
			template.HTMLEscapeString(ns), template.HTMLEscapeString(ns), count[ns], ServiceGraphSVG(sub, subDenied))
	}
	return b.String()
}

func orOutside(ns string) string {
	if ns == "" {
		return "(outside the cluster)"
	}
	return ns
}
