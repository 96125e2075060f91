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
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
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
	// DiffBudget bounds the semantic diff (default 10s): it judges every
	// pair of peers on every port, so on a large cluster the page says it
	// did not finish rather than keep the viewer waiting.
	DiffBudget time.Duration
}

// Handler serves the page.
type Handler struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger

	mu      sync.Mutex
	current []networkingv1.NetworkPolicy
	gen     int // bumped by SetCurrent: a page built before is stale

	buildMu  sync.Mutex // one build at a time
	built    *page
	builtAt  time.Time
	builtGen int
}

// New returns the handler.
func New(cfg Config, conn driver.Conn, log *slog.Logger) *Handler {
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 15 * time.Second
	}
	if cfg.DiffBudget <= 0 {
		cfg.DiffBudget = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Handler{cfg: cfg, conn: conn, log: log, current: cfg.Current}
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

type changeRow struct {
	From, To, Ports string
	Gains           bool
	Observed        uint64
	// Why: for a loss of observed traffic, the generator's reason for
	// leaving it out (a guardrail); else whether it was observed.
	Why string
}

type page struct {
	Now       time.Time
	Window    time.Duration
	Flows     int
	Workloads int
	SVG       template.HTML
	Findings  []findingRow
	Policies  []policyRow
	Changes   []changeRow
	// ChangeRows is how many rows there were before the page kept the
	// first maxChangeRows.
	ChangeRows int
	Losses     int
	// ObservedLosses are the losses of observed traffic: what the
	// generator left out on purpose (guardrails), listed first.
	ObservedLosses int
	Gains          int
	// InForce is how many policies the diff is made against.
	InForce int
	// DiffError says why there is no diff (it did not finish in time).
	DiffError string
	// Blast is the blast radius in force and with the recommendation.
	Blast *enforcer.BlastRadius
	Error string
}

// maxChangeRows bounds the diff table; the rows with the most observed
// flows come first.
const maxChangeRows = 50

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
	err := clickhouse.EachFlowGroup(ctx, h.conn, now.Add(-h.cfg.Window), now, func(f *schema.Flow, n uint64, first, last time.Time) {
		p.Flows += int(n)
		b.AddGroup(f, n, first, last)
	})
	if err != nil {
		return nil, err
	}
	p.Workloads = len(b.Graph.Workloads)
	p.SVG = template.HTML(enforcer.ServiceGraphSVG(b.Graph, b.Denied))
	rows, err := h.conn.Query(ctx, `SELECT start, severity, detector, namespace, workload, peer, summary, status, query
		FROM findings FINAL ORDER BY start DESC LIMIT 20`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var f findingRow
		var ns, wl, peer string
		if err := rows.Scan(&f.Start, &f.Severity, &f.Detector, &ns, &wl, &peer, &f.Summary, &f.Status, &f.Query); err != nil {
			rows.Close()
			return nil, err
		}
		f.Subject = strings.Trim(ns+"/"+wl, "/")
		if peer != "" {
			f.Subject += " → " + peer
		}
		p.Findings = append(p.Findings, f)
	}
	rows.Close()
	if len(b.Graph.Workloads) > 0 {
		res, err := enforcer.Generate(b.Graph, enforcer.DefaultConfig())
		if err != nil {
			return nil, err
		}
		for _, np := range res.Policies {
			y, _ := enforcer.MarshalPolicy(np)
			p.Policies = append(p.Policies, policyRow{Name: np.Namespace + "/" + np.Name, YAML: string(y)})
		}
		p.InForce = len(current)
		if p.Blast, err = enforcer.ComputeBlastRadius(current, res.Policies, b.Graph); err != nil {
			return nil, err
		}
		dctx, cancel := context.WithTimeout(ctx, h.cfg.DiffBudget)
		changes, err := enforcer.SemanticDiff(dctx, current, res.Policies, b.Graph)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && dctx.Err() != nil:
			p.DiffError = fmt.Sprintf("The semantic diff of %d workloads did not finish within %s; flowwarden recommend --current prints it.", len(b.Graph.Workloads), h.cfg.DiffBudget)
		case err != nil:
			return nil, err
		default:
			p.addChanges(changes, res.Skipped)
		}
	}
	return p, nil
}

// addChanges groups the semantic diff into rows (one per pair, direction
// and reason), observed traffic first.
func (p *page) addChanges(changes []enforcer.Change, skipped []enforcer.Skipped) {
	leftOut := map[[3]string]string{}
	for _, s := range skipped {
		leftOut[[3]string{s.Edge.From.String(), s.Edge.To.String(), fmt.Sprintf("%s/%d", s.Edge.Protocol, s.Edge.Port)}] = s.Reason
	}
	type rowKey struct {
		from, to, why string
		gains         bool
	}
	grouped := map[rowKey]*changeRow{}
	for _, c := range changes {
		var why string
		switch {
		case c.Gains && c.Observed > 0:
			why = "observed"
		case c.Gains:
			why = "not observed" // allowed by a rule that also covers this port
		case c.Observed > 0:
			why = leftOut[[3]string{c.From, c.To, c.Port}]
			if why == "" {
				why = "observed, left out"
			}
		default:
			why = "not observed"
		}
		k := rowKey{c.From, c.To, why, c.Gains}
		row := grouped[k]
		if row == nil {
			row = &changeRow{From: c.From, To: c.To, Gains: c.Gains, Why: why}
			grouped[k] = row
		}
		if row.Ports != "" {
			row.Ports += " "
		}
		row.Ports += c.Port
		row.Observed += c.Observed
		if c.Gains {
			p.Gains++
		} else {
			p.Losses++
			if c.Observed > 0 {
				p.ObservedLosses++
			}
		}
	}
	for _, r := range grouped {
		p.Changes = append(p.Changes, *r)
	}
	sort.Slice(p.Changes, func(i, j int) bool {
		a, b := &p.Changes[i], &p.Changes[j]
		if a.Observed != b.Observed {
			return a.Observed > b.Observed
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	p.ChangeRows = len(p.Changes)
	if len(p.Changes) > maxChangeRows {
		p.Changes = p.Changes[:maxChangeRows]
	}
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format(time.DateTime) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flowwarden</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}
h1{margin:0 0 .3rem}h2{margin-top:2rem;border-bottom:2px solid #333}
.meta{color:#555}.map{border:1px solid #ddd;overflow:auto;max-height:70vh}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.critical{color:#b00020;font-weight:bold}.warning{color:#a15c00;font-weight:bold}
pre{margin:0;font-size:.8rem;white-space:pre-wrap}.gain{color:#1b5e20}.loss{color:#b00020}.err{color:#b00020}
</style></head><body>
<h1>flowwarden</h1>
<p class="meta">{{.Flows}} flows from {{.Workloads}} workloads in the last {{.Window}} (to {{ts .Now}} UTC).</p>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<h2>Service map</h2>
<div class="map" id="service-map">{{.SVG}}</div>
<h2>Recent findings</h2>
{{if .Findings}}<table id="findings"><tr><th>start</th><th>severity</th><th>detector</th><th>subject</th><th>summary</th><th>status</th><th>SQL</th></tr>
{{range .Findings}}<tr><td>{{ts .Start}}</td><td class="{{.Severity}}">{{.Severity}}</td><td>{{.Detector}}</td><td>{{.Subject}}</td><td>{{.Summary}}</td><td>{{.Status}}</td><td><details><summary>query</summary><pre>{{.Query}}</pre></details></td></tr>
{{end}}</table>{{else}}<p>No findings.</p>{{end}}
<h2>Recommended policies</h2>
{{with .Blast}}<p id="blast-radius">Blast radius (workloads one compromised workload reaches, directly or by pivoting, any port): <strong>{{.Before}} → {{.After}}</strong> over {{len .Rows}} workloads, a <strong>{{printf "%.1f" .ReductionPercent}}% reduction</strong> with the recommended policies.</p>
<details><summary>per workload</summary><table id="blast-radius-rows"><tr><th>workload</th><th>before</th><th>after</th><th>of</th></tr>
{{range .Rows}}<tr><td>{{.Workload}}</td><td>{{.Before}}</td><td>{{.After}}</td><td>{{.Total}}</td></tr>{{end}}</table></details>{{end}}
{{if .DiffError}}<p id="diff-error" class="err">{{.DiffError}}</p>{{else}}{{if not .InForce}}<p id="no-policies">No NetworkPolicies in force are known (<code>serve --current-policies DIR|cluster</code> gives them), so today every pair may talk and the diff below is everything the recommendation closes.</p>{{end}}
<p id="diff-summary">{{len .Policies}} policies; against the {{.InForce}} policies in force, {{.Losses}} pair/port combinations would lose access ({{.ObservedLosses}} of them observed, left out on purpose: listed first, with the reason) and {{.Gains}} would gain it.</p>
{{if .Changes}}<table id="changes"><tr><th>from</th><th>to</th><th>change</th><th>ports</th><th>observed flows</th><th>why</th></tr>
{{range .Changes}}<tr><td>{{.From}}</td><td>{{.To}}</td>{{if .Gains}}<td class="gain">gains</td>{{else}}<td class="loss">loses</td>{{end}}<td>{{.Ports}}</td><td>{{.Observed}}</td><td>{{.Why}}</td></tr>
{{end}}</table>{{if gt .ChangeRows (len .Changes)}}<p>The {{len .Changes}} rows with the most observed flows of {{.ChangeRows}}; <code>flowwarden recommend --current</code> prints them all.</p>{{end}}{{end}}{{end}}
{{range .Policies}}<details><summary>{{.Name}}</summary><pre>{{.YAML}}</pre></details>
{{end}}
</body></html>
`))
