// Package webui is the page serve shows on its listen address: a live
// service map from the last hour of traffic, the recent findings with their
// SQL, and the policies flowwarden would recommend with their semantic diff.
// Plain server-rendered HTML and SVG; no scripts, no build step.
package webui

import (
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/schema"
)

// Config configures the page.
type Config struct {
	// Window is how much recent traffic the map and the recommendation use
	// (default 1h).
	Window time.Duration
	// Current are the policies in force, for the semantic diff (none: the
	// diff is against no policies at all).
	Current []networkingv1.NetworkPolicy
	// Now is the clock (tests pin it to the data's time).
	Now func() time.Time
	// MaxAge is how long a built page is served again before it is
	// rebuilt (default 15s): building reads the window's traffic, generates
	// the policies and diffs them, seconds of CPU on a large cluster, so
	// viewers share one build and never pile builds up.
	MaxAge time.Duration
	// DiffBudget bounds the semantic diff (default 10s; it is computed
	// over equivalence classes, 5,000 workloads in a few seconds): past it
	// the page says the diff did not finish rather than keep the viewer
	// waiting.
	DiffBudget time.Duration
	// Recommend turns the observed graph into the recommended policies,
	// holding back the edges that are evidence of the findings over the
	// same window (flagged; none when the store cannot list them): serve
	// passes the pipeline `recommend` runs, with the generator flags it
	// was given (default: enforcer.Recommend with DefaultConfig).
	Recommend func(g *enforcer.Graph, flagged []schema.Finding) (*enforcer.Result, error)
	// MTLSCoverage gives each namespace's mTLS coverage of the inbound
	// mesh requests the detectors have counted since serve started (serve
	// passes analyze.(*Engine).MTLSCoverage); nil: not counted (serve
	// runs without its detectors).
	MTLSCoverage func() []schema.NamespaceCoverage
}

// Store is what the page reads from storage; cmd passes schema/clickhouse's
// Reader, tests may pass anything.
type Store interface {
	// EachFlowGroup calls fn for each group of like flows in [since, until).
	EachFlowGroup(ctx context.Context, since, until time.Time, fn func(f *schema.Flow, flows uint64, first, last time.Time)) error
	// RecentFindings returns the newest n findings, newest first.
	RecentFindings(ctx context.Context, n int) ([]schema.FindingRecord, error)
}

// FindingStore is a Store that also lists the findings of a window with
// their evidence: the recommended policies then hold back the edges they
// flag, as recommend's do.
type FindingStore interface {
	// Findings returns the findings whose span meets [since, until),
	// each in its latest state.
	Findings(ctx context.Context, since, until time.Time) ([]schema.Finding, error)
}

// Handler serves the page.
type Handler struct {
	cfg   Config
	store Store
	log   *slog.Logger

	mu      sync.Mutex
	current []networkingv1.NetworkPolicy
	gen     int // bumped by SetCurrent: a page built before is stale

	buildMu  sync.Mutex // one build at a time
	built    *page
	builtAt  time.Time
	builtGen int
}

// New returns the handler; it does no I/O.
func New(cfg Config, store Store, log *slog.Logger) *Handler {
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 15 * time.Second
	}
	if cfg.Recommend == nil {
		cfg.Recommend = func(g *enforcer.Graph, flagged []schema.Finding) (*enforcer.Result, error) {
			c := enforcer.DefaultConfig()
			c.Flagged = flagged
			return enforcer.Recommend(g, c)
		}
	}
	if cfg.DiffBudget <= 0 {
		cfg.DiffBudget = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Handler{cfg: cfg, store: store, log: log, current: cfg.Current}
}

// SetCurrent replaces the policies in force the diff is made against.
func (h *Handler) SetCurrent(nps []networkingv1.NetworkPolicy) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = nps
	h.gen++
}

func (h *Handler) currentPolicies() ([]networkingv1.NetworkPolicy, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current, h.gen
}

// page returns the page built within MaxAge for the same policies in
// force, or builds it; concurrent viewers wait for one build.
func (h *Handler) page(ctx context.Context) (*page, error) {
	h.buildMu.Lock()
	defer h.buildMu.Unlock()
	current, gen := h.currentPolicies()
	if h.built != nil && h.builtGen == gen && time.Since(h.builtAt) < h.cfg.MaxAge {
		return h.built, nil
	}
	p, err := h.build(ctx, current)
	if err != nil {
		return nil, err
	}
	h.built, h.builtAt, h.builtGen = p, time.Now(), gen
	return p, nil
}

type findingRow struct {
	Start                                time.Time
	Severity, Detector, Subject, Summary string
	Status, Query                        string
}

type page struct {
	Now       time.Time
	Window    time.Duration
	Flows     int
	Workloads int
	Map       template.HTML
	Findings  []findingRow
	Policies  []policyRow
	// Allows are the recommended allows per workload, with their evidence.
	Allows []enforcer.RuleEvidence
	// Summary leads the page; its diff part may be missing (DiffError).
	Summary *enforcer.Summary
	// InForce is how many policies the diff is made against.
	InForce int
	// HeldBack counts the observed edges held back as evidence of findings.
	HeldBack int
	// Mesh is the mTLS coverage per namespace; MeshCounted is false when
	// nothing counts it.
	Mesh        []schema.NamespaceCoverage
	MeshCounted bool
	Error       string
}

type policyRow struct {
	Name string
	YAML string
}

// ServeHTTP renders the page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	p, err := h.page(ctx)
	if err != nil {
		h.log.Warn("web page", "err", err)
		p = &page{Now: h.cfg.Now(), Error: err.Error()}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'")
	if err := pageTemplate.Execute(w, p); err != nil {
		h.log.Warn("web page render", "err", err)
	}
}

func (h *Handler) build(ctx context.Context, current []networkingv1.NetworkPolicy) (*page, error) {
	now := h.cfg.Now()
	p := &page{Now: now, Window: h.cfg.Window}
	b := enforcer.NewReportBuilder()
	err := h.store.EachFlowGroup(ctx, now.Add(-h.cfg.Window), now, func(f *schema.Flow, n uint64, first, last time.Time) {
		p.Flows += int(n)
		b.AddGroup(f, n, first, last)
	})
	if err != nil {
		return nil, err
	}
	p.Workloads = len(b.Graph.Workloads)
	if h.cfg.MTLSCoverage != nil {
		p.Mesh, p.MeshCounted = h.cfg.MTLSCoverage(), true
	}
	p.Map = template.HTML(enforcer.ServiceMapHTML(b.Graph, b.Denied, enforcer.GroupAbove))
	recent, err := h.store.RecentFindings(ctx, 20)
	if err != nil {
		return nil, err
	}
	for _, r := range recent {
		p.Findings = append(p.Findings, findingRow{Start: r.Start, Severity: r.Severity, Detector: r.Detector, Subject: r.Subject(),
			Summary: r.Summary, Status: r.Status, Query: r.Query})
	}
	if len(b.Graph.Workloads) > 0 {
		var flagged []schema.Finding
		if fs, ok := h.store.(FindingStore); ok {
			if flagged, err = fs.Findings(ctx, now.Add(-h.cfg.Window), now); err != nil {
				return nil, err
			}
		}
		res, err := h.cfg.Recommend(b.Graph, flagged)
		if err != nil {
			return nil, err
		}
		p.HeldBack = len(res.HeldBack())
		for _, np := range res.Policies {
			y, _ := enforcer.MarshalPolicy(np)
			p.Policies = append(p.Policies, policyRow{Name: np.Namespace + "/" + np.Name, YAML: string(y)})
		}
		p.Allows = res.Evidence
		sort.SliceStable(p.Allows, func(i, j int) bool {
			a, b := p.Allows[i], p.Allows[j]
			return a.Policy+a.Direction+a.Peer+a.Port < b.Policy+b.Direction+b.Peer+b.Port
		})
		p.InForce = len(current)
		dctx, cancel := context.WithTimeout(ctx, h.cfg.DiffBudget)
		p.Summary, err = enforcer.Summarize(dctx, b.Graph, current, res)
		cancel()
		if err != nil {
			return nil, err
		}
		if p.Summary.DiffError != "" {
			p.Summary.DiffError = fmt.Sprintf("The semantic diff of %d workloads did not finish within %s; flowwarden recommend --current prints it.", len(b.Graph.Workloads), h.cfg.DiffBudget)
		}
	}
	return p, nil
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"change":  enforcer.ChangeWords,
	"ts":      func(t time.Time) string { return t.UTC().Format(time.DateTime) },
	"percent": enforcer.Percent,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flowwarden</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}
h1{margin:0 0 .3rem}h2{margin-top:2rem;border-bottom:2px solid #333}
.meta{color:#555}.map{border:1px solid #ddd}.map svg{max-width:100%;height:auto;display:block}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.critical{color:#b00020;font-weight:bold}.warning{color:#a15c00;font-weight:bold}
pre{margin:0;font-size:.8rem;white-space:pre-wrap}.gain{color:#1b5e20}.loss{color:#b00020}.err{color:#b00020}
</style></head><body>
<h1>flowwarden</h1>
<p class="meta">{{.Flows}} flows from {{.Workloads}} workloads in the last {{.Window}} (to {{ts .Now}} UTC).</p>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
{{with .Summary}}<section id="summary"><h2>Summary</h2>
{{if not $.InForce}}<p id="no-policies">No NetworkPolicies in force are known (<code>serve --current-policies DIR|cluster</code> gives them), so today every pair may talk: the figures below are what the recommendation closes.</p>{{end}}
<ul>
<li>Namespaces with a default deny: {{.DefaultDenyBefore}} of {{.Namespaces}} in force, {{.DefaultDenyAfter}} with the recommended policies</li>
<li>Workloads covered by a policy: {{.CoveredBefore}} of {{.Workloads}} in force, {{.CoveredAfter}} with the recommended policies</li>
<li>Rules in force that carried no observed traffic: {{.RulesUnused}} of {{.RulesInForce}}</li>
<li id="blast-radius">Blast radius (workloads one compromised workload reaches, directly or by pivoting, any port): <strong>{{.BlastBefore}} → {{.BlastAfter}}</strong>: <strong>{{change .BlastReduction}}</strong> with the recommended policies</li>
<li>Observed traffic the recommended policies would deny: {{len .WouldDeny}} edges{{if .WouldDeny}} (below, with why){{end}}</li>
{{if $.HeldBack}}<li id="held-back">Held back as evidence of the detectors' findings: <strong>{{$.HeldBack}} edges</strong>, not allowed (below, with the finding)</li>{{end}}
</ul>
{{if .DiffError}}<p id="diff-error" class="err">{{.DiffError}}</p>{{else}}<p id="diff-summary">{{len $.Policies}} policies; against the {{$.InForce}} policies in force, {{.Losses}} pair/port combinations would lose access ({{len .WouldDeny}} of them observed, left out on purpose: listed below, with the reason) and {{.Gains}} would gain it.</p>{{end}}
{{with .WouldDeny}}<h3>Observed traffic the recommended policies would deny</h3>
<table id="would-deny"><tr><th>from</th><th>to</th><th>port</th><th>observed flows</th><th>why</th></tr>
{{range .}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{.Port}}</td><td>{{.Flows}}</td><td>{{.Why}}</td></tr>
{{end}}</table>{{end}}
{{if .UnobservedLosses}}<h3>Access nobody was seen using, removed</h3>
<table id="unobserved-losses"><tr><th>namespace</th><th>pair/port combinations losing access</th></tr>
{{range .UnobservedLossNamespaces}}<tr><td>{{.}}</td><td>{{index $.Summary.UnobservedLosses .}}</td></tr>
{{end}}</table>{{end}}
</section>{{end}}
<h2>Service map</h2>
<div class="map" id="service-map">{{.Map}}</div>
<section id="mtls-coverage"><h2>mTLS coverage</h2>
{{if not .MeshCounted}}<p>Not counted: serve runs without its detectors (<code>--detect=false</code>).</p>
{{else if .Mesh}}<p class="meta">Inbound mesh requests (logged by the receiving Envoy/Istio sidecar) since serve started, and the share secured by mutual TLS.</p>
<table id="mtls"><tr><th>namespace</th><th>requests</th><th>secured</th></tr>
{{range .Mesh}}<tr><td>{{.Namespace}}</td><td>{{.Total}}</td><td>{{percent .Ratio}}</td></tr>
{{end}}</table>
{{else}}<p id="no-mesh">No inbound mesh requests seen since serve started (Envoy/Istio access logs: <code>serve --envoy-file</code>).</p>{{end}}
</section>
<h2>Recent findings</h2>
{{if .Findings}}<table id="findings"><tr><th>start</th><th>severity</th><th>detector</th><th>subject</th><th>summary</th><th>status</th><th>SQL</th></tr>
{{range .Findings}}<tr><td>{{ts .Start}}</td><td class="{{.Severity}}">{{.Severity}}</td><td>{{.Detector}}</td><td>{{.Subject}}</td><td>{{.Summary}}</td><td>{{.Status}}</td><td><details><summary>query</summary><pre>{{.Query}}</pre></details></td></tr>
{{end}}</table>{{else}}<p>No findings.</p>{{end}}
<h2>Recommended policies</h2>
{{with .Allows}}<table id="allows"><tr><th>policy</th><th>direction</th><th>peer</th><th>port</th><th>observed flows</th></tr>
{{range .}}<tr><td>{{.Policy}}</td><td>{{.Direction}}</td><td>{{.Peer}}</td><td>{{.Port}}</td><td>{{.Stats.Flows}}</td></tr>
{{end}}</table>{{end}}
{{range .Policies}}<details><summary>{{.Name}}</summary><pre>{{.YAML}}</pre></details>
{{end}}
</body></html>
`))
