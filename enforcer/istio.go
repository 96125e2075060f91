package enforcer

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/schema"
)

// Istio flavour: one ALLOW AuthorizationPolicy per workload from the
// inbound requests its sidecar logged, and PeerAuthentication STRICT for
// the namespaces where nobody called in plaintext.
//
// Semantics (istio.io/latest/docs/reference/config/security/authorization-policy):
// a request is allowed by an ALLOW policy when any of its rules matches; a
// rule matches when any of its `from` and any of its `to` match (an absent
// list matches anything); within a source or an operation every field set
// must match, and a field matches when any of its values does. Paths are
// exact, "prefix*", "*suffix" or "*". When any ALLOW policy selects a
// workload, a request no ALLOW policy matches is denied (no DENY or CUSTOM
// policies are written here). Principals are SPIFFE IDs without "spiffe://"
// and need mutual TLS: a plaintext request has no principal, so plaintext
// callers are allowed by namespace (also mTLS-derived in Istio, so a
// plaintext caller from outside the mesh is allowed by ipBlocks).

// AuthorizationPolicy is security.istio.io/v1 AuthorizationPolicy as written.
type AuthorizationPolicy struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]any    `json:"metadata"`
	Spec       AuthorizationSpec `json:"spec"`
}

// AuthorizationSpec is the spec (the fields written).
type AuthorizationSpec struct {
	Selector *WorkloadSelector `json:"selector,omitempty"`
	Action   string            `json:"action,omitempty"`
	Rules    []IstioRule       `json:"rules,omitempty"` // none: allow nothing
}

// WorkloadSelector selects the workload's pods.
type WorkloadSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// IstioRule is one rule: any from and any to.
type IstioRule struct {
	From []IstioFrom `json:"from,omitempty"`
	To   []IstioTo   `json:"to,omitempty"`
}

// IstioFrom wraps a source.
type IstioFrom struct {
	Source IstioSource `json:"source"`
}

// IstioSource is who sent the request.
type IstioSource struct {
	Principals []string `json:"principals,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	IPBlocks   []string `json:"ipBlocks,omitempty"`
}

// IstioTo wraps an operation.
type IstioTo struct {
	Operation IstioOperation `json:"operation"`
}

// IstioOperation is what was asked.
type IstioOperation struct {
	Ports   []string `json:"ports,omitempty"`
	Methods []string `json:"methods,omitempty"`
	Paths   []string `json:"paths,omitempty"`
}

// PeerAuthentication is security.istio.io/v1 PeerAuthentication as written.
type PeerAuthentication struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		MTLS struct {
			Mode string `json:"mode"`
		} `json:"mtls"`
	} `json:"spec"`
}

// IstioRequest is one inbound request as Istio's authorization sees it.
type IstioRequest struct {
	Workload  string // "ns/name" of the destination
	Principal string // source principal, "" without mTLS
	Namespace string // source namespace, "" without mTLS or unknown
	SrcIP     netip.Addr
	Port      uint16
	Method    string
	Path      string
	MTLS      bool
	Caller    string // for the readiness list: the source as a person reads it
}

// IstioObservations collects inbound requests from sidecar access logs.
type IstioObservations struct {
	Requests  map[IstioRequest]uint64
	labels    map[string]map[string]string // workload → stable labels
	TrustDom  string
	Plaintext map[string]map[string]uint64 // namespace → caller → requests in plaintext
	MTLSIn    map[string]uint64            // namespace → requests with mTLS
	// first and last are when each request was seen (for the findings'
	// spans: which requests are evidence of one).
	first, last map[IstioRequest]time.Time
}

// NewIstioObservations uses trust domain td ("cluster.local" when empty)
// for principals derived from service accounts.
func NewIstioObservations(td string) *IstioObservations {
	if td == "" {
		td = "cluster.local"
	}
	return &IstioObservations{Requests: map[IstioRequest]uint64{}, labels: map[string]map[string]string{}, TrustDom: td,
		Plaintext: map[string]map[string]uint64{}, MTLSIn: map[string]uint64{},
		first: map[IstioRequest]time.Time{}, last: map[IstioRequest]time.Time{}}
}

// Add takes one flow: an inbound (sidecar-side) forwarded HTTP request of
// an Envoy access log whose destination workload is known.
func (o *IstioObservations) Add(f *schema.Flow) {
	if f.Source != schema.SourceEnvoy || f.Direction != schema.DirectionIngress || !forwarded(f) ||
		f.Dst.Namespace == "" || f.Dst.Workload == "" || f.HTTPMethod == "" {
		return
	}
	r := IstioRequest{Workload: f.Dst.Namespace + "/" + f.Dst.Workload, SrcIP: f.SrcIP, Port: f.DstPort,
		Method: f.HTTPMethod, Path: requestPath(f.HTTPPath), MTLS: f.MTLS}
	if r.Port == 0 {
		return
	}
	if f.MTLS {
		r.Principal = strings.TrimPrefix(f.SrcPrincipal, "spiffe://")
		if r.Principal == "" && f.Src.Namespace != "" {
			if sa := f.Src.Labels["io.cilium.k8s.policy.serviceaccount"]; sa != "" {
				r.Principal = o.TrustDom + "/ns/" + f.Src.Namespace + "/sa/" + sa
			}
		}
		r.Namespace = f.Src.Namespace
	}
	r.Caller = f.SrcIP.String()
	if f.Src.Namespace != "" && f.Src.Workload != "" {
		r.Caller = f.Src.Namespace + "/" + f.Src.Workload
	}
	o.Requests[r]++
	if t := f.Time; !t.IsZero() {
		if first, ok := o.first[r]; !ok || t.Before(first) {
			o.first[r] = t
		}
		if t.After(o.last[r]) {
			o.last[r] = t
		}
	}
	if o.labels[r.Workload] == nil {
		o.labels[r.Workload] = StableLabels(f.Dst.Labels)
	}
	if f.MTLS {
		o.MTLSIn[f.Dst.Namespace]++
	} else {
		if o.Plaintext[f.Dst.Namespace] == nil {
			o.Plaintext[f.Dst.Namespace] = map[string]uint64{}
		}
		o.Plaintext[f.Dst.Namespace][r.Caller]++
	}
}

// source is how a request's sender is named in a rule: principal with
// mTLS, else namespace (only mTLS gives one), else the address.
func (r IstioRequest) source() IstioSource {
	switch {
	case r.Principal != "":
		return IstioSource{Principals: []string{r.Principal}}
	case r.Namespace != "":
		return IstioSource{Namespaces: []string{r.Namespace}}
	default:
		bits := 32
		if r.SrcIP.Is6() {
			bits = 128
		}
		return IstioSource{IPBlocks: []string{netip.PrefixFrom(r.SrcIP, bits).String()}}
	}
}

// IstioPaths writes Istio paths for a set of paths: exact, except that
// paths equal but for their last segment, seen with at least family values,
// become "dir/*" (Istio's prefix match).
func IstioPaths(paths []string, family int) []string {
	paths = slices.Clone(paths)
	slices.Sort(paths)
	paths = slices.Compact(paths)
	byDir := map[string][]string{}
	for _, p := range paths {
		i := strings.LastIndex(p, "/")
		if i > 0 && i < len(p)-1 { // not the first segment, not a trailing slash
			byDir[p[:i+1]] = append(byDir[p[:i+1]], p)
		}
	}
	covered := map[string]bool{}
	var out []string
	for _, dir := range sortedKeys(byDir) {
		if family > 1 && len(byDir[dir]) >= family {
			out = append(out, dir+"*")
			for _, p := range byDir[dir] {
				covered[p] = true
			}
		}
	}
	for _, p := range paths {
		if !covered[p] {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// IstioPolicies writes one ALLOW policy per workload: a rule per source,
// its operations one per port and method with the paths asked. A workload
// without stable labels gets none (an empty selector would put the ALLOW
// policy on every workload of the namespace): it is returned in skipped.
// The requests in held are left out (a workload whose every request is
// held gets an ALLOW policy without rules, which allows nothing: with no
// ALLOW policy Istio would allow everything).
func (o *IstioObservations) IstioPolicies(cfg L7Config, namePrefix string, held map[IstioRequest][]Flag) (aps []AuthorizationPolicy, skipped []string) {
	type opKey struct {
		port   uint16
		method string
	}
	bySrc := map[string]map[string]map[opKey][]string{} // workload → source → op → paths
	srcOf := map[string]IstioSource{}
	for r := range o.Requests {
		if bySrc[r.Workload] == nil {
			bySrc[r.Workload] = map[string]map[opKey][]string{}
		}
		if _, ok := held[r]; ok {
			continue
		}
		s := r.source()
		sk := fmt.Sprint(s)
		srcOf[sk] = s
		if bySrc[r.Workload][sk] == nil {
			bySrc[r.Workload][sk] = map[opKey][]string{}
		}
		k := opKey{r.Port, r.Method}
		bySrc[r.Workload][sk][k] = append(bySrc[r.Workload][sk][k], r.Path)
	}
	var out []AuthorizationPolicy
	for _, w := range sortedKeys(bySrc) {
		if len(o.labels[w]) == 0 {
			skipped = append(skipped, w)
			continue
		}
		ns, name, _ := strings.Cut(w, "/")
		ap := AuthorizationPolicy{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy",
			Metadata: map[string]any{"name": namePrefix + name, "namespace": ns, "labels": map[string]string{"app.kubernetes.io/managed-by": "flowwarden"}},
			Spec:     AuthorizationSpec{Action: "ALLOW", Selector: &WorkloadSelector{MatchLabels: o.labels[w]}, Rules: []IstioRule{}}}
		for _, sk := range sortedKeys(bySrc[w]) {
			ops := bySrc[w][sk]
			keys := make([]opKey, 0, len(ops))
			for k := range ops {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, b opKey) int {
				if a.port != b.port {
					return int(a.port) - int(b.port)
				}
				return strings.Compare(a.method, b.method)
			})
			rule := IstioRule{From: []IstioFrom{{Source: srcOf[sk]}}}
			for _, k := range keys {
				rule.To = append(rule.To, IstioTo{Operation: IstioOperation{Ports: []string{strconv.Itoa(int(k.port))},
					Methods: []string{k.method}, Paths: IstioPaths(ops[k], cfg.PathFamily)}})
			}
			ap.Spec.Rules = append(ap.Spec.Rules, rule)
		}
		out = append(out, ap)
	}
	return out, skipped
}

// istioPathMatch is Istio's path match: exact, "prefix*", "*suffix", "*".
func istioPathMatch(pattern, path string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(path, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(path, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == path
}

// anyMatch: an absent field matches; else any value must match.
func anyMatch(values []string, match func(string) bool) bool {
	if len(values) == 0 {
		return true
	}
	return slices.ContainsFunc(values, match)
}

func (s IstioSource) matches(r IstioRequest) bool {
	return anyMatch(s.Principals, func(p string) bool { return r.Principal != "" && istioPathMatch(p, r.Principal) }) &&
		anyMatch(s.Namespaces, func(n string) bool { return r.Namespace != "" && istioPathMatch(n, r.Namespace) }) &&
		anyMatch(s.IPBlocks, func(b string) bool {
			p, err := netip.ParsePrefix(b)
			if err != nil {
				a, err2 := netip.ParseAddr(b)
				return err2 == nil && a == r.SrcIP
			}
			return p.Contains(r.SrcIP)
		})
}

func (op IstioOperation) matches(r IstioRequest) bool {
	return anyMatch(op.Ports, func(p string) bool { return p == strconv.Itoa(int(r.Port)) }) &&
		anyMatch(op.Methods, func(m string) bool { return m == r.Method }) &&
		anyMatch(op.Paths, func(p string) bool { return istioPathMatch(p, r.Path) })
}

func (rule IstioRule) matches(r IstioRequest) bool {
	from := len(rule.From) == 0
	for _, f := range rule.From {
		if f.Source.matches(r) {
			from = true
			break
		}
	}
	to := len(rule.To) == 0
	for _, t := range rule.To {
		if t.Operation.matches(r) {
			to = true
			break
		}
	}
	return from && to
}

// IstioAllows judges a request to a workload (its pod labels given) by ALLOW
// policies with Istio's semantics: allowed when no ALLOW policy selects the
// workload, or when a rule of one that does matches. It names the policy.
func IstioAllows(aps []AuthorizationPolicy, workloadNS string, podLabels map[string]string, r IstioRequest) (bool, string) {
	selected := false
	for _, ap := range aps {
		if ns, _ := ap.Metadata["namespace"].(string); ns != workloadNS || (ap.Spec.Action != "" && ap.Spec.Action != "ALLOW") {
			continue
		}
		if ap.Spec.Selector != nil {
			match := true
			for k, v := range ap.Spec.Selector.MatchLabels {
				if podLabels[k] != v {
					match = false
				}
			}
			if !match {
				continue
			}
		}
		selected = true
		for _, rule := range ap.Spec.Rules {
			if rule.matches(r) {
				name, _ := ap.Metadata["name"].(string)
				return true, name
			}
		}
	}
	if !selected {
		return true, "no ALLOW policy selects the workload"
	}
	return false, "no rule of the workload's ALLOW policies matches"
}

// ProveIstio checks the policies against every observed request (each
// must be allowed, but those held back, which must be denied: intended
// denials) and against unobserved variants of each (another method, a
// path under /admin, a principal and namespace nobody used: each must be
// denied). It returns the failures.
func (o *IstioObservations) ProveIstio(aps []AuthorizationPolicy, held map[IstioRequest][]Flag) []string {
	var bad []string
	for r := range o.Requests {
		ns, _, _ := strings.Cut(r.Workload, "/")
		labels := o.labels[r.Workload]
		if len(labels) == 0 {
			continue // no policy written for it
		}
		if flags, ok := held[r]; ok {
			if ok, why := IstioAllows(aps, ns, labels, r); ok {
				bad = append(bad, fmt.Sprintf("held-back %s allowed by %s (evidence of %s)", r, why, flags[0]))
			}
			continue
		}
		if ok, why := IstioAllows(aps, ns, labels, r); !ok {
			bad = append(bad, fmt.Sprintf("observed %s %s %s:%d from %s denied: %s", r.Method, r.Path, r.Workload, r.Port, r.Caller, why))
		}
		for _, v := range unobservedVariants(r) {
			if _, seen := o.Requests[v]; seen {
				continue
			}
			if ok, why := IstioAllows(aps, ns, labels, v); ok {
				bad = append(bad, fmt.Sprintf("unobserved %s %s to %s:%d from %q/%q allowed by %s", v.Method, v.Path, v.Workload, v.Port, v.Principal, v.Namespace, why))
			}
		}
	}
	return bad
}

func unobservedVariants(r IstioRequest) []IstioRequest {
	m := r
	m.Method = "DELETE"
	if r.Method == "DELETE" {
		m.Method = "PATCH"
	}
	p := r
	p.Path = "/admin/flowwarden-unobserved"
	// A stranger is another pod: its address too is one nobody used (the
	// caller's own address may be allowed by an ipBlocks rule for its
	// plaintext requests).
	stranger := r
	stranger.Principal, stranger.Namespace = "", ""
	stranger.SrcIP = netip.MustParseAddr("192.0.2.254")
	if r.Principal != "" || r.Namespace != "" {
		stranger.Principal, stranger.Namespace = "cluster.local/ns/flowwarden-stranger/sa/default", "flowwarden-stranger"
	}
	port := r
	port.Port = r.Port + 1
	return []IstioRequest{m, p, stranger, port}
}

// MTLSReadiness is, per namespace that received requests, whether STRICT
// mutual TLS would break observed traffic, and who called in plaintext.
type MTLSReadiness struct {
	Namespace string
	MTLS      uint64
	// Plaintext callers and their requests: each breaks under STRICT.
	Plaintext map[string]uint64
}

// Ready says STRICT would break nothing observed.
func (m MTLSReadiness) Ready() bool { return len(m.Plaintext) == 0 }

// Readiness lists every namespace with inbound requests. The plaintext
// requests in held do not count: the AuthorizationPolicies deny them
// anyway, so STRICT breaks nothing that is allowed.
func (o *IstioObservations) Readiness(held map[IstioRequest][]Flag) []MTLSReadiness {
	plain := map[string]map[string]uint64{}
	for ns, callers := range o.Plaintext {
		plain[ns] = map[string]uint64{}
		for c, n := range callers {
			plain[ns][c] = n
		}
	}
	for r := range held {
		ns, _, _ := strings.Cut(r.Workload, "/")
		if r.MTLS || plain[ns] == nil {
			continue
		}
		if plain[ns][r.Caller] -= min(plain[ns][r.Caller], o.Requests[r]); plain[ns][r.Caller] == 0 {
			delete(plain[ns], r.Caller)
		}
	}
	nss := map[string]bool{}
	for ns := range o.MTLSIn {
		nss[ns] = true
	}
	for ns := range o.Plaintext {
		nss[ns] = true
	}
	var out []MTLSReadiness
	for _, ns := range sortedKeys(nss) {
		m := MTLSReadiness{Namespace: ns, MTLS: o.MTLSIn[ns]}
		if len(plain[ns]) > 0 {
			m.Plaintext = plain[ns]
		}
		out = append(out, m)
	}
	return out
}

// StrictPeerAuthentication is the namespace-wide STRICT policy.
func StrictPeerAuthentication(ns string) PeerAuthentication {
	pa := PeerAuthentication{APIVersion: "security.istio.io/v1", Kind: "PeerAuthentication",
		Metadata: map[string]any{"name": "default", "namespace": ns, "labels": map[string]string{"app.kubernetes.io/managed-by": "flowwarden"}}}
	pa.Spec.MTLS.Mode = "STRICT"
	return pa
}

// MarshalIstio renders an Istio object as YAML.
func MarshalIstio(obj any) ([]byte, error) { return yaml.Marshal(obj) }
