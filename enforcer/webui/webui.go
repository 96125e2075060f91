// Package webui is the page serve shows on its listen address: a live
// service map from the last hour of traffic, the recent findings with their
// SQL, and the policies flowwarden would recommend with their semantic diff.
// Plain server-rendered HTML and SVG; no scripts, no build step.
package webui

import (
	"context"
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
}

// Handler serves the page.
type Handler struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger

	mu      sync.Mutex
	current []networkingv1.NetworkPolicy
}

// New returns the handler.
func New(cfg Config, conn driver.Conn, log *slog.Logger) *Handler {
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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
}

func (h *Handler) currentPolicies() []networkingv1.NetworkPolicy {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current
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
	Losses    int
	Gains     int
	Error     string
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
	p, err := h.build(ctx)
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

func (h *Handler) build(ctx context.Context) (*page, error) {
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
		changes, err := enforcer.SemanticDiff(h.currentPolicies(), res.Policies, b.Graph)
		if err != nil {
			return nil, err
		}
		grouped := map[[3]string]*changeRow{}
		for _, c := range changes {
			k := [3]string{c.From, c.To, map[bool]string{true: "gains", false: "loses"}[c.Gains]}
			row := grouped[k]
			if row == nil {
				row = &changeRow{From: c.From, To: c.To, Gains: c.Gains}
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
			}
		}
		for _, r := range grouped {
			p.Changes = append(p.Changes, *r)
		}
		sort.Slice(p.Changes, func(i, j int) bool {
			if p.Changes[i].Observed != p.Changes[j].Observed {
				return p.Changes[i].Observed > p.Changes[j].Observed
			}
			return p.Changes[i].From+p.Changes[i].To < p.Changes[j].From+p.Changes[j].To
		})
		if len(p.Changes) > 50 {
			p.Changes = p.Changes[:50]
		}
	}
	return p, nil
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
<p>{{len .Policies}} policies; against the policies in force, {{.Losses}} pair/port combinations would lose access and {{.Gains}} would gain it.</p>
{{if .Changes}}<table id="changes"><tr><th>from</th><th>to</th><th>change</th><th>ports</th><th>observed flows</th></tr>
{{range .Changes}}<tr><td>{{.From}}</td><td>{{.To}}</td>{{if .Gains}}<td class="gain">gains</td>{{else}}<td class="loss">loses</td>{{end}}<td>{{.Ports}}</td><td>{{.Observed}}</td></tr>
{{end}}</table>{{end}}
{{range .Policies}}<details><summary>{{.Name}}</summary><pre>{{.YAML}}</pre></details>
{{end}}
</body></html>
`))
