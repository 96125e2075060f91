package enforcer

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Least privilege must not learn the attack: an observed edge that is
// evidence of a detector's finding over the same traffic is held back
// (left out of the policies, and proven denied) instead of allowed.
// Which edges a finding holds back depends on its detector: each rule
// below names the connections the finding is about, never a whole
// workload's traffic, so the workload's ordinary traffic stays allowed.
//
// The detectors are named by their strings: this package does not import
// analyze (cmd's TestHoldBackRulesCoverDetectors checks every detector the
// engine runs has a rule here).
const (
	// holdHeavyEgress: the subject workload's edges to addresses outside
	// the cluster that were active during the finding and, over its
	// span, carried on their own more than twice as many flows per window
	// as the workload's whole usual egress (the finding's baseline; an
	// ordinary destination is part of that baseline, so it stays, while
	// with no usual egress every destination of the spike is held). With
	// a byte metric (no flow baseline): those first seen during it.
	holdHeavyEgress = "edges of the workload to outside addresses that alone carried more than twice its usual egress during the finding"
	// holdPeer: every edge of the subject workload to the finding's peer
	// address, any port.
	holdPeer = "edges of the workload to the peer address"
	// holdPeerName: every edge of the subject workload to an address
	// reached by a name under the finding's peer domain (the DNS queries
	// themselves go to the cluster DNS, which stays allowed).
	holdPeerName = "edges of the workload to addresses named under the peer domain (DNS itself stays allowed)"
	// holdNewEdges: the subject workload's edges first seen during the
	// finding (from a window before its start to its end): the probes
	// that got through; edges it had before stay.
	holdNewEdges = "edges of the workload first seen during the finding"
)

// holdBackRules maps each detector to the edges its findings hold back
// ("" when they hold back none, with why in holdBackNone).
var holdBackRules = map[string]string{
	"egress-spike":        holdHeavyEgress,
	"beacon":              holdPeer,
	"dns-tunnel":          holdPeerName,
	"lateral-scan":        holdNewEdges,
	"egress-denial-spike": holdNewEdges,
	// The rest hold back nothing:
	"metadata-access":        "",
	"cross-namespace-denial": "",
	"denial-rate":            "",
	"plaintext-in-mesh":      "",
	"nft-drop-spike":         "",
}

// holdBackNone says why a detector's findings hold back no edge.
var holdBackNone = map[string]string{
	"metadata-access":        "the metadata-service guardrail never allows it anyway",
	"cross-namespace-denial": "about denied flows, which teach no allow; and a namespace pair, not a connection",
	"denial-rate":            "about denied flows of a whole namespace, which teach no allow",
	"plaintext-in-mesh":      "NetworkPolicy cannot tell plaintext from mutual TLS on the same port (--flavor istio writes STRICT PeerAuthentication)",
	"nft-drop-spike":         "about the host firewall's counters, not pod traffic",
}

// HoldBackRule says which observed edges a finding of the detector holds
// back, or why none; known is false for a detector this package does not
// know (its findings hold back nothing, and Generate warns).
func HoldBackRule(detector string) (rule string, known bool) {
	return ruleOf(holdBackRules, holdBackNone, detector)
}

// ruleOf is the hold-back rule of detector in one flavour's tables: the
// rule, or "none: " and why.
func ruleOf(rules, none map[string]string, detector string) (rule string, known bool) {
	rule, known = rules[detector]
	if known && rule == "" {
		return "none: " + none[detector], true
	}
	return rule, known
}

// sortFlags orders each held-back item's flags most severe first, then
// oldest first.
func sortFlags[K comparable](held map[K][]Flag) {
	for _, flags := range held {
		sort.SliceStable(flags, func(i, j int) bool {
			if a, b := flags[i].Severity.Rank(), flags[j].Severity.Rank(); a != b {
				return a > b
			}
			return flags[i].Start.Before(flags[j].Start)
		})
	}
}

// Flag is a finding an edge is held back for, as a reviewer sees it.
type Flag struct {
	ID       string          `json:"id"`
	Detector string          `json:"detector"`
	Severity schema.Severity `json:"severity"`
	Subject  string          `json:"subject"`
	Start    time.Time       `json:"start"`
	End      time.Time       `json:"end"`
	// Flows counts the flows the finding counted (its evidence).
	Flows   uint64 `json:"flows"`
	Summary string `json:"summary,omitempty"`
}

func flagOf(f *schema.Finding) Flag {
	return Flag{ID: f.ID, Detector: f.Detector, Severity: f.Severity, Subject: f.Subject(), Start: f.Start.UTC(), End: f.End.UTC(),
		Flows: f.Evidence.Flows, Summary: f.Summary}
}

// String is the flag in one line: "critical egress-spike on
// bookinfo/reviews-v2 (5000 flows, 2026-03-02T09:30:00Z to 09:31:00Z)".
func (f Flag) String() string {
	end := f.End.Format(time.RFC3339)
	if f.End.Format(time.DateOnly) == f.Start.Format(time.DateOnly) {
		end = f.End.Format("15:04:05Z07:00")
	}
	return fmt.Sprintf("%s %s on %s (%d flows, %s to %s)", f.Severity, f.Detector, f.Subject, f.Flows, f.Start.Format(time.RFC3339), end)
}

// HeldBackPrefix starts the Reason of an edge held back for findings.
const HeldBackPrefix = "held back: evidence of "

// heldBackReason is the Skipped.Reason of an edge held back for flags.
func heldBackReason(flags []Flag) string {
	parts := make([]string, len(flags))
	for i, f := range flags {
		parts[i] = f.String()
	}
	return HeldBackPrefix + strings.Join(parts, "; ")
}

// HeldBack returns the edges left out because they are evidence of a
// finding (Skipped with Flags).
func (r *Result) HeldBack() []Skipped {
	var out []Skipped
	for _, s := range r.Skipped {
		if len(s.Flags) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// flaggedEdges returns the observed edges that are evidence of the
// findings, each with the findings it is evidence of (most severe first),
// and the detectors it does not know.
func flaggedEdges(g *Graph, findings []schema.Finding) (map[Edge][]Flag, []string) {
	out := map[Edge][]Flag{}
	if len(findings) == 0 {
		return out, nil
	}
	// The findings on a workload, by workload.
	byWorkload := map[string][]*schema.Finding{}
	unknown := map[string]bool{}
	for i := range findings {
		f := &findings[i]
		rule, known := holdBackRules[f.Detector]
		if !known {
			unknown[f.Detector] = true
			continue
		}
		if rule == "" || f.Workload == "" || f.Namespace == "" {
			continue
		}
		k := f.Namespace + "/" + f.Workload
		byWorkload[k] = append(byWorkload[k], f)
	}
	for e, st := range g.Edges {
		if e.From.Kind != PeerWorkload {
			continue
		}
		for _, f := range byWorkload[e.From.Workload] {
			if evidenceOf(f, e, st) {
				out[e] = append(out[e], flagOf(f))
			}
		}
	}
	sortFlags(out)
	return out, sortedKeys(unknown)
}

// evidenceOf tells whether edge e (from the finding's workload), with its
// stats, is evidence of finding f.
func evidenceOf(f *schema.Finding, e Edge, st *EdgeStats) bool {
	switch holdBackRules[f.Detector] {
	case holdHeavyEgress:
		if e.To.Kind != PeerExternal {
			return false
		}
		in := flowsWithin(st, f.Start, f.End)
		if in <= 0 {
			return false
		}
		if f.Evidence.Metric != "flows" {
			return firstSeenDuring(f, st)
		}
		windows := 1.0
		if w := f.Evidence.Window; w > 0 && f.End.Sub(f.Start) > w {
			windows = float64(f.End.Sub(f.Start)) / float64(w)
		}
		return in/windows > 2*f.Evidence.Baseline
	case holdPeer:
		a, err := netip.ParseAddr(f.Peer)
		return err == nil && e.To.Kind != PeerWorkload && e.To.Addr == a.Unmap()
	case holdPeerName:
		return e.To.Kind != PeerWorkload && e.To.Name != "" && nameUnder(e.To.Name, f.Peer)
	case holdNewEdges:
		return firstSeenDuring(f, st)
	}
	return false
}

// firstSeenDuring tells whether an edge was first seen within the
// finding's span, from one window before its start (the windows are
// aligned; the first probes may come before the window that fired).
func firstSeenDuring(f *schema.Finding, st *EdgeStats) bool {
	if st.First.IsZero() {
		return false // no times (aggregated evidence): cannot tell
	}
	return !st.First.Before(f.Start.Add(-f.Evidence.Window)) && st.First.Before(f.End)
}

// flowsWithin estimates an edge's flows within [from, to): all of them
// when the edge was seen only within it, else its flows spread evenly
// over the time it was seen (the graph keeps a count and the first and
// last times per edge, not every flow's).
func flowsWithin(st *EdgeStats, from, to time.Time) float64 {
	if st.First.IsZero() && st.Last.IsZero() {
		return float64(st.Flows) // no times: assume it was seen throughout
	}
	if !to.After(from) {
		to = from.Add(time.Second)
	}
	if st.Last.Equal(st.First) {
		if !st.First.Before(from) && st.First.Before(to) {
			return float64(st.Flows)
		}
		return 0
	}
	lo, hi := st.First, st.Last
	if from.After(lo) {
		lo = from
	}
	if to.Before(hi) {
		hi = to
	}
	if !hi.After(lo) {
		return 0
	}
	return float64(st.Flows) * float64(hi.Sub(lo)) / float64(st.Last.Sub(st.First))
}

// nameUnder tells whether DNS name n is domain d or under it, any case.
func nameUnder(n, d string) bool {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	return d != "" && (n == d || strings.HasSuffix(n, "."+d))
}

// tunnels are the domains of dns-tunnel findings, per workload.
type tunnels map[string][]string

// tunnelDomains gathers the dns-tunnel findings' domains per workload.
func tunnelDomains(findings []schema.Finding) tunnels {
	t := tunnels{}
	for _, f := range findings {
		if holdBackRules[f.Detector] == holdPeerName && f.Namespace != "" && f.Workload != "" && f.Peer != "" {
			k := f.Namespace + "/" + f.Workload
			t[k] = append(t[k], f.Peer)
		}
	}
	return t
}

// holds tells whether workload's lookup of name is evidence of one of its
// dns-tunnel findings: the name is under the finding's domain.
func (t tunnels) holds(workload, name string) bool {
	for _, d := range t[workload] {
		if nameUnder(name, d) {
			return true
		}
	}
	return false
}
