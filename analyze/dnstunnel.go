package analyze

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/flowwarden/flowwarden/schema"
)

// DetectorDNSTunnel names the DNS tunnelling detector.
const DetectorDNSTunnel = "dns-tunnel"

// DNSTunnelConfig: information carried in DNS query names, per source
// workload and registered domain (eTLD+1 of the public suffix list).
type DNSTunnelConfig struct {
	Enabled bool `json:"enabled"`
	// Window is the span information is summed over, in three slices.
	Window time.Duration `json:"window"`
	// MinBytes is the information, in bytes, that new query names must
	// carry to one registered domain within Window to fire.
	MinBytes float64 `json:"minBytes"`
	// MinNames is the number of new names needed as well.
	MinNames int `json:"minNames"`
	// Domains is how many registered domains are tracked per workload: the
	// heaviest by information in the window (the lightest is replaced).
	Domains int `json:"domains"`
	// Names under ClusterDomain and SearchSuffixes (the nodes' own search
	// domains) are not judged: the cluster's names and the resolver's
	// search-path expansions are answered inside and carry nothing out.
	ClusterDomain  string   `json:"clusterDomain"`
	SearchSuffixes []string `json:"searchSuffixes"`
	// ResolveAfter is the number of slices below the threshold that resolve a finding.
	ResolveAfter int `json:"resolveAfter"`
}

func defaultDNSTunnel() DNSTunnelConfig {
	return DNSTunnelConfig{Enabled: true, Window: 15 * time.Minute, MinBytes: 320, MinNames: 10, Domains: 4,
		ClusterDomain: "cluster.local", ResolveAfter: 3}
}

func (c *DNSTunnelConfig) validate() error {
	var errs []error
	if c.MinBytes <= 0 || c.MinNames < 1 || c.Domains < 1 {
		errs = append(errs, errors.New("dnsTunnel: minBytes, minNames and domains must be positive"))
	}
	if c.ClusterDomain == "" {
		errs = append(errs, errors.New("dnsTunnel.clusterDomain must be set (cluster.local)"))
	}
	return errors.Join(errs...)
}

// dnsCached is a name judged before: most DNS traffic repeats a few names.
type dnsCached struct {
	q, ns, reg, sub, name string
	ok                    bool
}

const dnsCacheSize = 512

const (
	dnsSlices     = 3
	dnsFilterBits = 2048 // novelty filter per domain and generation
	dnsSampleKeep = 3
)

// dnsDomain is one registered domain a workload queries: the information its
// new names carried per slice, and a filter of names already seen.
type dnsDomain struct {
	name    string
	info    [dnsSlices]float64 // estimated bytes in new names, per slice
	names   [dnsSlices]uint32  // new names per slice
	nx      [dnsSlices]uint32  // NXDOMAIN answers per slice
	queries [dnsSlices]uint32
	tq      [dnsSlices]uint32 // queries of a tunnel's record types (tunnelQType) per slice
	first   time.Time
	last    time.Time
	seen    [2][dnsFilterBits / 64]uint64 // names seen: this generation, the previous one
	sampleQ []string
	samples []schema.Flow
	open    *schema.Finding
	quiet   int
}

func (d *dnsDomain) sum() (info float64, names, nx, queries uint64) {
	for i := 0; i < dnsSlices; i++ {
		info += d.info[i]
		names += uint64(d.names[i])
		nx += uint64(d.nx[i])
		queries += uint64(d.queries[i])
	}
	return
}

// score is the information in the domain's new names weighted by its
// record-type mix: up to twice the bytes when every query asks TXT, NULL
// or ANY (tunnels favour them: their answers carry the most data back),
// the bytes themselves for A/AAAA-only traffic or flows without types.
func (d *dnsDomain) score(info float64, tq, queries uint64) float64 {
	if tq == 0 || queries == 0 {
		return info
	}
	return info * (1 + float64(tq)/float64(queries))
}

// tunnelTypes sums the tunnel-type queries of the window.
func (d *dnsDomain) tunnelTypes() (tq uint64) {
	for i := 0; i < dnsSlices; i++ {
		tq += uint64(d.tq[i])
	}
	return tq
}

// tunnelQType reports whether a query's types (Flow.DNSQType) include a
// tunnel's favourite: TXT, NULL or ANY.
func tunnelQType(qt string) bool {
	switch qt {
	case "", "A", "AAAA":
		return false
	case "TXT", "NULL", "ANY":
		return true
	}
	for qt != "" {
		var t string
		t, qt, _ = strings.Cut(qt, ",")
		if strings.EqualFold(t, "TXT") || strings.EqualFold(t, "NULL") || strings.EqualFold(t, "ANY") {
			return true
		}
	}
	return false
}

type dnsWorkload struct {
	k     key
	start time.Time // current slice's start
	cur   int       // ring index of the current slice
	rolls int
	last  time.Time
	doms  []*dnsDomain
	elem  *list.Element
}

type dnsTunnel struct {
	cfg     DNSTunnelConfig
	slice   time.Duration
	maxKeys int
	samples int
	sink    FindingSink
	metrics *Metrics
	cluster string // "." + cluster domain
	extra   []string
	names   [dnsCacheSize]dnsCached // recent names already judged
	ws      map[key]*dnsWorkload
	lru     *list.List
}

func newDNSTunnel(c DNSTunnelConfig, g *Config, sink FindingSink, m *Metrics) *dnsTunnel {
	d := &dnsTunnel{cfg: c, slice: c.Window / dnsSlices, maxKeys: g.MaxKeys, samples: g.Samples, sink: sink, metrics: m,
		cluster: strings.ToLower(strings.Trim(c.ClusterDomain, ".")), ws: map[key]*dnsWorkload{}, lru: list.New()}
	for _, s := range c.SearchSuffixes {
		if s = strings.ToLower(strings.Trim(s, ".")); s != "" {
			d.extra = append(d.extra, s)
		}
	}
	return d
}

func (d *dnsTunnel) Name() string { return DetectorDNSTunnel }
func (d *dnsTunnel) Keys() int    { return len(d.ws) }

// outsideName returns the registered domain of a name a pod in namespace
// ns asked and the part left of it, or ok=false for a name that stays
// inside the cluster: under its search domains, or with no listed public
// suffix. (ns is part of the cache key only: search domains are per namespace.)
func (d *dnsTunnel) outsideName(q, ns string) (reg, sub, name string, ok bool) {
	c := &d.names[(fnv64(q)^uint64(len(ns)))%dnsCacheSize]
	if c.q == q && c.ns == ns && q != "" {
		return c.reg, c.sub, c.name, c.ok
	}
	reg, sub, name, ok = d.judgeName(q, ns)
	*c = dnsCached{q: q, ns: ns, reg: reg, sub: sub, name: name, ok: ok}
	return
}

func (d *dnsTunnel) judgeName(q, ns string) (reg, sub, name string, ok bool) {
	q = strings.TrimSuffix(q, ".")
	if hasUpper(q) {
		q = strings.ToLower(q)
	}
	if d.insideName(q) {
		return "", "", "", false
	}
	name = q
	suffix, icann := publicsuffix.PublicSuffix(name)
	if !icann && strings.IndexByte(suffix, '.') < 0 {
		return "", "", "", false // no listed suffix: a cluster or private name (svc, local, internal, pod)
	}
	reg, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return "", "", "", false
	}
	if len(name) > len(reg) {
		sub = name[:len(name)-len(reg)-1]
	}
	return reg, sub, name, true
}

// insideName reports whether q ends in the cluster domain or one of the
// nodes' search domains: the cluster's own names, and the search-path
// expansions of outside names (x.evil.com.<ns>.svc.cluster.local). Those
// are answered inside the cluster (CoreDNS, the VPC resolver) and carry
// nothing out, and their NXDOMAIN answers are not a tunnel's: only the
// query that leaves, x.evil.com., is judged.
func (d *dnsTunnel) insideName(q string) bool {
	if _, ok := cutDomainSuffix(q, d.cluster); ok {
		return true
	}
	for _, s := range d.extra {
		if _, ok := cutDomainSuffix(q, s); ok {
			return true
		}
	}
	return false
}

// cutDomainSuffix returns q without ".suffix" (or "" when q is suffix).
func cutDomainSuffix(q, suffix string) (string, bool) {
	if q == suffix {
		return "", true
	}
	if len(q) > len(suffix) && q[len(q)-len(suffix)-1] == '.' && strings.HasSuffix(q, suffix) {
		return q[:len(q)-len(suffix)-1], true
	}
	return q, false
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// nameInfoBytes estimates the information in a name's new part: its
// length (dots excluded) times the Shannon entropy of its characters, in
// bytes. Repeating or dictionary-like labels carry little; encoded data
// nearly its full size.
func nameInfoBytes(sub string) float64 {
	var counts [256]uint8
	n := 0
	for i := 0; i < len(sub); i++ {
		if sub[i] == '.' {
			continue
		}
		counts[sub[i]]++
		n++
	}
	if n == 0 {
		return 0
	}
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / float64(n)
			h -= p * math.Log2(p)
		}
	}
	return float64(n) * h / 8
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func (d *dnsTunnel) Observe(f *schema.Flow) {
	if f.L7Type != "dns" || f.DNSQuery == "" {
		return
	}
	// The asking workload is the source of a query and the destination of an answer.
	ep := &f.Src
	if f.IsReply {
		ep = &f.Dst
	}
	if ep.Namespace == "" || ep.WorkloadKind == schema.KindReserved {
		return
	}
	w := d.workload(key{ep.Namespace, ep.Workload}, f.Time)
	reg, sub, name, ok := d.outsideName(f.DNSQuery, ep.Namespace)
	if !ok {
		return
	}
	i := w.cur
	if f.IsReply {
		// Answers are counted for a domain already tracked; they never
		// take a place in the table.
		if dom := d.lookup(w, reg); dom != nil && f.DNSRCode == 3 {
			dom.nx[i]++
		}
		return
	}
	dom := d.domain(w, reg)
	if dom == nil {
		return
	}
	dom.queries[i]++
	if tunnelQType(f.DNSQType) {
		dom.tq[i]++
	}
	dom.last = f.Time
	if sub == "" {
		return
	}
	h := fnv64(sub)
	word, bit := (h%dnsFilterBits)/64, uint64(1)<<(h%64)
	if (dom.seen[0][word]|dom.seen[1][word])&bit != 0 {
		return // asked before: no new information
	}
	dom.seen[0][word] |= bit
	dom.info[i] += nameInfoBytes(sub)
	dom.names[i]++
	if dom.first.IsZero() {
		dom.first = f.Time
	}
	info, names, _, queries := dom.sum()
	score := dom.score(info, dom.tunnelTypes(), queries)
	if score >= d.cfg.MinBytes/2 {
		if len(dom.sampleQ) < dnsSampleKeep {
			dom.sampleQ = append(dom.sampleQ, strings.Clone(name))
		}
		if len(dom.samples) < d.samples {
			dom.samples = append(dom.samples, *f)
		}
	}
	if dom.open == nil && score >= d.cfg.MinBytes && names >= uint64(d.cfg.MinNames) {
		d.openFinding(w, dom)
		d.report(w, dom)
	}
}

// workload returns the workload's state with its slices rolled to at.
func (d *dnsTunnel) workload(k key, at time.Time) *dnsWorkload {
	w, ok := d.ws[k]
	if !ok {
		w = &dnsWorkload{k: k, start: at.Truncate(d.slice)}
		w.elem = d.lru.PushFront(w)
		d.ws[k] = w
		for len(d.ws) > d.maxKeys {
			d.evict(d.lru.Back().Value.(*dnsWorkload))
		}
	} else {
		d.lru.MoveToFront(w.elem)
		d.roll(w, at)
	}
	if at.After(w.last) {
		w.last = at
	}
	return w
}

func (d *dnsTunnel) lookup(w *dnsWorkload, reg string) *dnsDomain {
	for _, dom := range w.doms {
		if dom.name == reg {
			return dom
		}
	}
	return nil
}

// domain finds or makes the workload's entry for reg. A full table
// replaces its lightest entry without an open finding, and the newcomer
// starts from nothing: it must outweigh the others on its own to stay.
// (Space-Saving's inherited counts would let a crawler's stream of new
// domains ratchet every entry up and push out a slow tunnel whose weight,
// unlike theirs, is concentrated on one domain.)
func (d *dnsTunnel) domain(w *dnsWorkload, reg string) *dnsDomain {
	if dom := d.lookup(w, reg); dom != nil {
		return dom
	}
	if len(w.doms) < d.cfg.Domains {
		dom := &dnsDomain{name: strings.Clone(reg)}
		w.doms = append(w.doms, dom)
		return dom
	}
	var min *dnsDomain
	minW := math.Inf(1)
	for _, dom := range w.doms {
		if dom.open != nil {
			continue
		}
		info, _, _, _ := dom.sum()
		if info < minW {
			min, minW = dom, info
		}
	}
	if min == nil {
		return nil
	}
	*min = dnsDomain{name: strings.Clone(reg), sampleQ: min.sampleQ[:0], samples: min.samples[:0]}
	return min
}

func (d *dnsTunnel) roll(w *dnsWorkload, at time.Time) {
	for n := 0; !at.Before(w.start.Add(d.slice)); n++ {
		if n > dnsSlices+d.cfg.ResolveAfter {
			w.start = at.Truncate(d.slice)
			break
		}
		d.closeSlice(w)
		w.start = w.start.Add(d.slice)
	}
}

// closeSlice ends the workload's current slice: open findings are updated
// or resolved, the oldest slice is forgotten.
func (d *dnsTunnel) closeSlice(w *dnsWorkload) {
	end := w.start.Add(d.slice)
	for _, dom := range w.doms {
		if dom.open != nil {
			// A slice that carried less than its share of the threshold is quiet.
			c := w.cur
			if dom.score(dom.info[c], uint64(dom.tq[c]), uint64(dom.queries[c])) >= d.cfg.MinBytes/dnsSlices {
				dom.quiet = 0
				dom.open.End = end
				d.report(w, dom)
			} else if dom.quiet++; dom.quiet >= d.cfg.ResolveAfter {
				dom.open.Status = schema.FindingResolved
				d.sink.Finding(*dom.open)
				dom.open = nil
			}
		}
	}
	w.cur = (w.cur + 1) % dnsSlices
	w.rolls++
	newGen := w.rolls%dnsSlices == 0
	for _, dom := range w.doms {
		dom.info[w.cur], dom.names[w.cur], dom.nx[w.cur], dom.queries[w.cur], dom.tq[w.cur] = 0, 0, 0, 0, 0
		if newGen {
			dom.seen[1] = dom.seen[0]
			dom.seen[0] = [dnsFilterBits / 64]uint64{}
		}
		if info, _, _, _ := dom.sum(); info == 0 && dom.open == nil {
			dom.first = time.Time{}
			dom.sampleQ, dom.samples = dom.sampleQ[:0], dom.samples[:0]
		}
	}
}

func (d *dnsTunnel) openFinding(w *dnsWorkload, dom *dnsDomain) {
	dom.open = &schema.Finding{
		ID: findingID(DetectorDNSTunnel, w.k.String()+"/"+dom.name), Detector: DetectorDNSTunnel, Severity: schema.SeverityCritical,
		Namespace: w.k.a, Workload: w.k.b, Peer: dom.name, Start: dom.first.Truncate(time.Second), Status: schema.FindingOpen,
		Evidence: schema.Evidence{Window: d.cfg.Window, Metric: "bytes/s in query names"},
	}
	dom.quiet = 0
	d.metrics.Findings.WithLabelValues(DetectorDNSTunnel, string(schema.SeverityCritical)).Inc()
}

// report sends the open finding with the domain's current numbers.
func (d *dnsTunnel) report(w *dnsWorkload, dom *dnsDomain) {
	f := dom.open
	info, names, nx, queries := dom.sum()
	span := dom.last.Sub(dom.first)
	span = max(span, time.Minute)
	span = min(span, d.cfg.Window)
	rate := info / span.Seconds()
	if f.End.Before(dom.last) {
		f.End = dom.last.Truncate(time.Second).Add(time.Second)
	}
	e := &f.Evidence
	e.Threshold = d.cfg.MinBytes / d.cfg.Window.Seconds()
	if uint64(info) < e.Bytes {
		d.sink.Finding(*f) // past the peak: keep the peak's numbers
		return
	}
	types := ""
	if tq := dom.tunnelTypes(); tq > 0 {
		// The record types weigh in: the evidence shows the weighted
		// rate that is compared with the threshold, and the share.
		e.Metric = "bytes/s in query names, weighted by the TXT/NULL/ANY share of queries"
		rate = dom.score(info, tq, queries) / span.Seconds()
		types = fmt.Sprintf(", %.0f%% of them TXT/NULL/ANY", 100*float64(tq)/float64(queries))
	}
	e.Observed = max(e.Observed, rate)
	e.Flows, e.Bytes = queries, uint64(info)
	e.Samples = append([]schema.Flow(nil), dom.samples...)
	f.Summary = fmt.Sprintf("%s/%s carries about %.1f B/s in DNS query names to %s (%d new names, %d queries%s, %d NXDOMAIN in %s; e.g. %s)",
		w.k.a, w.k.b, info/span.Seconds(), dom.name, names, queries, types, nx, d.cfg.Window, strings.Join(dom.sampleQ, ", "))
	f.Flows = dnsSelector(f.Start, f.End, w.k, dom.name)
	d.sink.Finding(*f)
}

func (d *dnsTunnel) Advance(now time.Time) {
	for e := d.lru.Back(); e != nil; e = e.Prev() {
		d.roll(e.Value.(*dnsWorkload), now)
	}
	// Workloads whose DNS the flows showed in the last hour.
	visible := 0
	for e := d.lru.Front(); e != nil && now.Sub(e.Value.(*dnsWorkload).last) < time.Hour; e = e.Next() {
		visible++
	}
	d.metrics.DNSVisibleWorkloads.Set(float64(visible))
}

func (d *dnsTunnel) Flush() {
	for e := d.lru.Back(); e != nil; e = e.Prev() {
		w := e.Value.(*dnsWorkload)
		for _, dom := range w.doms {
			if dom.open != nil {
				d.report(w, dom)
			}
		}
	}
}

func (d *dnsTunnel) evict(w *dnsWorkload) {
	for _, dom := range w.doms {
		if dom.open != nil {
			dom.open.Status = schema.FindingResolved
			d.sink.Finding(*dom.open)
		}
	}
	d.lru.Remove(w.elem)
	delete(d.ws, w.k)
	d.metrics.Evictions.WithLabelValues(DetectorDNSTunnel).Inc()
}

// dnsSelector selects the workload's DNS flows for the domain, expansions included.
func dnsSelector(from, to time.Time, k key, domain string) *schema.FlowSelector {
	return &schema.FlowSelector{From: from, To: to, DNS: true, Where: []schema.Cond{
		schema.Eq("l7_type", "dns"),
		schema.AnyOf(
			[]schema.Cond{schema.Eq("src_namespace", k.a), schema.Eq("src_workload", k.b)},
			[]schema.Cond{schema.Eq("dst_namespace", k.a), schema.Eq("dst_workload", k.b)}),
		{Field: "dns_query", Op: schema.OpDNSUnder, Values: []string{domain}},
	}}
}
