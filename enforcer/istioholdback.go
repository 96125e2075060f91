package enforcer

import (
	"fmt"
	"sort"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Istio's AuthorizationPolicies (recommend --flavor istio) judge the
// requests a workload's sidecar receives: a source (principal, namespace
// or address) asking a method and path on a port. A finding holds back the
// inbound requests that are evidence of it, by its detector:
const (
	// istioHoldNewCallers: the requests of the finding's workload, as a
	// caller, on the edges (to a workload and port) it opened for the
	// first time during the finding; its older edges stay allowed.
	istioHoldNewCallers = "requests the workload sent, as a caller, on edges to workloads and ports first seen during the finding"
	// istioHoldPlaintext: the requests into the finding's workload without
	// mutual TLS, during the finding, from the callers and on the ports of
	// the flows the finding counted (its sample flows: a scraper on a port
	// exempt from STRICT and kubelet's probes are not among them). Without
	// mutual TLS a request has no principal nor namespace: the generator
	// would allow it by its address (ipBlocks), and no longer does.
	istioHoldPlaintext = "plaintext requests into the workload during the finding, from the callers and on the ports the finding counted"
)

// istioHoldBackRules maps each detector to the inbound requests its
// findings hold back in AuthorizationPolicies ("" when none, with why in
// istioHoldBackNone).
var istioHoldBackRules = map[string]string{
	"lateral-scan":        istioHoldNewCallers,
	"egress-denial-spike": istioHoldNewCallers,
	"plaintext-in-mesh":   istioHoldPlaintext,
	// The rest hold back nothing here:
	"egress-spike":           "",
	"beacon":                 "",
	"dns-tunnel":             "",
	"metadata-access":        "",
	"cross-namespace-denial": "",
	"denial-rate":            "",
	"nft-drop-spike":         "",
}

const istioEgressOnly = "its evidence is egress to outside the mesh, which no sidecar logs as an inbound request (an ALLOW AuthorizationPolicy judges inbound requests); --flavor kubernetes or cilium holds it back"

// istioHoldBackNone says why a detector's findings hold back no request.
var istioHoldBackNone = map[string]string{
	"egress-spike":           istioEgressOnly,
	"beacon":                 istioEgressOnly,
	"dns-tunnel":             istioEgressOnly,
	"metadata-access":        "the metadata service is outside the mesh; NetworkPolicies' guardrail never allows it",
	"cross-namespace-denial": "about denied flows, which teach no allow",
	"denial-rate":            "about denied flows, which teach no allow",
	"nft-drop-spike":         "about the host firewall's counters, not requests",
}

// IstioHoldBackRule is HoldBackRule for --flavor istio: which inbound
// requests a finding of the detector holds back, or why none.
func IstioHoldBackRule(detector string) (rule string, known bool) {
	return ruleOf(istioHoldBackRules, istioHoldBackNone, detector)
}

// IstioHeldBack is an observed inbound request left out of the
// AuthorizationPolicies (and proven denied) because it is evidence of
// findings.
type IstioHeldBack struct {
	Request IstioRequest
	// Count is how many times it was observed; First and Last when.
	Count       uint64
	First, Last time.Time
	Flags       []Flag
}

// istioHeldBack returns the observed requests that are evidence of the
// findings, each with its flags (most severe first), and the detectors
// this package does not know.
func (o *IstioObservations) istioHeldBack(findings []schema.Finding) (map[IstioRequest][]Flag, []string) {
	out := map[IstioRequest][]Flag{}
	if len(findings) == 0 {
		return out, nil
	}
	// Each edge (caller → workload:port) first seen when.
	type edge struct {
		caller, workload string
		port             uint16
	}
	firstOnEdge, lastPlain := map[edge]time.Time{}, map[edge]time.Time{}
	firstPlain := map[edge]time.Time{}
	for r := range o.Requests {
		e := edge{r.Caller, r.Workload, r.Port}
		if t := o.first[r]; !t.IsZero() && (firstOnEdge[e].IsZero() || t.Before(firstOnEdge[e])) {
			firstOnEdge[e] = t
		}
		if r.MTLS {
			continue
		}
		if t := o.first[r]; !t.IsZero() && (firstPlain[e].IsZero() || t.Before(firstPlain[e])) {
			firstPlain[e] = t
		}
		if t := o.last[r]; t.After(lastPlain[e]) {
			lastPlain[e] = t
		}
	}
	unknown := map[string]bool{}
	for i := range findings {
		f := &findings[i]
		rule, known := istioHoldBackRules[f.Detector]
		if !known {
			unknown[f.Detector] = true
			continue
		}
		if rule == "" || f.Namespace == "" || f.Workload == "" {
			continue
		}
		subject := f.Namespace + "/" + f.Workload
		var counted map[string]bool // plaintext: "caller port" of the sample flows
		if rule == istioHoldPlaintext {
			counted = map[string]bool{}
			for _, s := range f.Evidence.Samples {
				counted[fmt.Sprintf("%s %d", flowCaller(&s), s.DstPort)] = true
			}
		}
		for r := range o.Requests {
			var hold bool
			switch rule {
			case istioHoldNewCallers:
				hold = r.Caller == subject &&
					firstSeenDuring(f, &EdgeStats{First: firstOnEdge[edge{r.Caller, r.Workload, r.Port}]})
			case istioHoldPlaintext:
				// The caller's plaintext on that port, all of it when some
				// of it was during the finding (its paths are not told
				// apart in time).
				e := edge{r.Caller, r.Workload, r.Port}
				hold = !r.MTLS && r.Workload == subject && counted[fmt.Sprintf("%s %d", r.Caller, r.Port)] &&
					overlaps(firstPlain[e], lastPlain[e], f.Start.Add(-f.Evidence.Window), f.End)
			}
			if hold {
				out[r] = append(out[r], flagOf(f))
			}
		}
	}
	sortFlags(out)
	return out, sortedKeys(unknown)
}

// overlaps tells whether [first, last] meets [from, to); without times it
// cannot tell, and says no.
func overlaps(first, last, from, to time.Time) bool {
	if first.IsZero() {
		return false
	}
	return !last.Before(from) && first.Before(to)
}

// flowCaller names a flow's source as IstioRequest.Caller does.
func flowCaller(f *schema.Flow) string {
	if f.Src.Namespace != "" && f.Src.Workload != "" {
		return f.Src.Namespace + "/" + f.Src.Workload
	}
	return f.SrcIP.String()
}

// IstioHeldBackReason is the reason of a request held back for flags,
// as for an edge.
func IstioHeldBackReason(flags []Flag) string { return heldBackReason(flags) }

// heldBackList is the held-back requests in a stable order.
func (o *IstioObservations) heldBackList(held map[IstioRequest][]Flag) []IstioHeldBack {
	out := make([]IstioHeldBack, 0, len(held))
	for r, flags := range held {
		out = append(out, IstioHeldBack{Request: r, Count: o.Requests[r], First: o.first[r], Last: o.last[r], Flags: flags})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Request.String() < out[j].Request.String() })
	return out
}

// String is the request in one line: "shop/cart → payments/ledger
// TCP/8080 GET /v1/entries (mTLS)".
func (r IstioRequest) String() string {
	tls := "plaintext"
	if r.MTLS {
		tls = "mTLS"
	}
	return fmt.Sprintf("%s → %s TCP/%d %s %s (%s)", r.Caller, r.Workload, r.Port, r.Method, r.Path, tls)
}
