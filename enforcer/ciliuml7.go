package enforcer

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Cilium layer 7: HTTP rules (method and path) on the ports whose every
// observed flow was HTTP that Cilium's proxy saw, and DNS rules naming the
// names looked up. An L7 rule sends all of a port's traffic through the
// proxy, which then refuses what it cannot parse as HTTP: a port where any
// peer's traffic was not seen as HTTP stays L4, and the output says so.
//
// Semantics (Cilium's docs and pkg/policy/api/http.go): `method` and `path`
// are extended POSIX regexes, matched by Envoy against the whole method and
// the whole path (no query string); an empty field matches anything; a
// request is allowed when any HTTP rule of the port matches it. The rules
// written here are anchored (^…$) and escaped, so partial and full matching
// agree.

// HTTPRule is one HTTP rule of a Cilium port rule.
type HTTPRule struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// L7Config tunes the L7 rules.
type L7Config struct {
	// PathFamily is how many distinct values one path segment (not the
	// first) must take, the rest of the path being equal, before the paths
	// are written as one rule with [^/]+ for it. 0 never generalises.
	PathFamily int
	// Flagged are the detectors' findings over the same traffic: the names
	// a workload looked up under the domain of a dns-tunnel finding on it
	// are left out of the DNS rules (held back, counted in the notes).
	Flagged []schema.Finding
	tunnels tunnels // from Flagged, by AddCiliumL7
}

// DefaultL7Config generalises a segment seen with 3 or more values.
func DefaultL7Config() L7Config { return L7Config{PathFamily: 3} }

// L7Observations collects what the proxies saw per workload, direction and
// port: HTTP requests, DNS names, and which peers sent traffic the proxy did
// not see as HTTP.
type L7Observations struct {
	ports map[l7Key]*l7Port
}

type l7Key struct {
	Workload string // "ns/name", the side whose policy holds the rule
	Ingress  bool
	Protocol string
	Port     uint16
}

type l7Peer struct {
	http, dns, otherL7, l4 uint64
}

type l7Port struct {
	peers map[Peer]*l7Peer
	http  map[[2]string]uint64 // method, path
	dns   map[string]uint64
}

// NewL7Observations returns an empty set.
func NewL7Observations() *L7Observations { return &L7Observations{ports: map[l7Key]*l7Port{}} }

// AddGroup has the signature of Graph.AddGroup so that both read one pass.
func (o *L7Observations) AddGroup(f *schema.Flow, n uint64, _, _ time.Time) { o.add(f, n) }

// Add records one flow.
func (o *L7Observations) Add(f *schema.Flow) { o.add(f, 1) }

func (o *L7Observations) add(f *schema.Flow, n uint64) {
	// Conservative: a flow whose opener is unknown counts as traffic on
	// its destination port (it can only keep a port L4).
	if !Counts(f) {
		return
	}
	e, why := EdgeOf(f)
	if why != "" {
		return
	}
	record := func(k l7Key, peer Peer) {
		p := o.ports[k]
		if p == nil {
			p = &l7Port{peers: map[Peer]*l7Peer{}, http: map[[2]string]uint64{}, dns: map[string]uint64{}}
			o.ports[k] = p
		}
		pp := p.peers[peer]
		if pp == nil {
			pp = &l7Peer{}
			p.peers[peer] = pp
		}
		switch {
		case f.L7Type == "http" && f.HTTPMethod != "":
			pp.http += n
			p.http[[2]string{f.HTTPMethod, requestPath(f.HTTPPath)}] += n
		case f.L7Type == "dns" && f.DNSQuery != "":
			pp.dns += n
			p.dns[strings.ToLower(strings.TrimSuffix(f.DNSQuery, "."))] += n
		case f.L7Type != "":
			pp.otherL7 += n
		default:
			pp.l4 += n
		}
	}
	if e.From.Kind == PeerWorkload {
		record(l7Key{e.From.Workload, false, e.Protocol, e.Port}, e.To)
	}
	if e.To.Kind == PeerWorkload {
		record(l7Key{e.To.Workload, true, e.Protocol, e.Port}, e.From)
	}
}

// requestPath is the path of a request target without query or fragment:
// what Cilium's path rule is matched against.
func requestPath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p == "" {
		p = "/"
	}
	return p
}

// httpOnly says whether every peer's traffic on the port was seen as HTTP
// by the proxy (a peer with L4 flows only was not proxied; one with L4
// flows and HTTP requests was: Hubble reports both for a proxied
// connection), and if not, why.
func (p *l7Port) httpOnly() (bool, string) {
	if len(p.http) == 0 {
		return false, "no HTTP seen by Cilium's proxy"
	}
	var notHTTP []string
	for peer, pp := range p.peers {
		if pp.otherL7 > 0 || pp.dns > 0 || pp.http == 0 {
			notHTTP = append(notHTTP, l7PeerName(peer))
		}
	}
	if len(notHTTP) > 0 {
		slices.Sort(notHTTP)
		return false, "traffic from/to " + strings.Join(notHTTP, ", ") + " was not seen as HTTP by Cilium's proxy (an HTTP rule would send it through the proxy, which refuses non-HTTP)"
	}
	return true, ""
}

func l7PeerName(p Peer) string {
	if p.Kind == PeerWorkload {
		return p.Workload
	}
	if p.Name != "" {
		return p.Addr.String() + " (" + p.Name + ")"
	}
	return p.Addr.String()
}

// HTTPRules are the rules for the observed requests of one port: one per
// method and path, or per method and path family.
func (p *l7Port) HTTPRules(cfg L7Config) []HTTPRule {
	byMethod := map[string][]string{}
	for k := range p.http {
		byMethod[k[0]] = append(byMethod[k[0]], k[1])
	}
	var out []HTTPRule
	for _, m := range sortedKeys(byMethod) {
		for _, path := range PathRegexes(byMethod[m], cfg.PathFamily) {
			out = append(out, HTTPRule{Method: "^" + regexp.QuoteMeta(m) + "$", Path: path})
		}
	}
	return out
}

// PathRegexes writes anchored, escaped regexes covering paths: each path
// exactly, except that paths equal but for one segment (not the first)
// that takes at least family distinct values become one regex with [^/]+
// there (/api/users/123, /api/users/456, /api/users/789 →
// ^/api/users/[^/]+$).
func PathRegexes(paths []string, family int) []string {
	paths = slices.Clone(paths)
	slices.Sort(paths)
	paths = slices.Compact(paths)
	covered := map[string]bool{}
	var out []string
	if family > 1 {
		// Try each segment position; a path joins at most one family.
		groups := map[string][]string{} // key: path with segment i blanked, "i|..."
		var keys []string
		for _, p := range paths {
			segs := strings.Split(p, "/")
			for i := 2; i < len(segs); i++ { // segs[0] is "" before the leading slash
				if segs[i] == "" {
					continue
				}
				k := make([]string, len(segs))
				copy(k, segs)
				k[i] = "\x00"
				key := strconv.Itoa(i) + "|" + strings.Join(k, "/")
				if groups[key] == nil {
					keys = append(keys, key)
				}
				groups[key] = append(groups[key], p)
			}
		}
		slices.Sort(keys)
		for _, key := range keys {
			var members []string
			for _, p := range groups[key] {
				if !covered[p] {
					members = append(members, p)
				}
			}
			if len(members) < family {
				continue
			}
			_, shape, _ := strings.Cut(key, "|")
			segs := strings.Split(shape, "/")
			for i, s := range segs {
				if s == "\x00" {
					segs[i] = "[^/]+"
				} else {
					segs[i] = regexp.QuoteMeta(s)
				}
			}
			out = append(out, "^"+strings.Join(segs, "/")+"$")
			for _, p := range members {
				covered[p] = true
			}
		}
	}
	for _, p := range paths {
		if !covered[p] {
			out = append(out, "^"+regexp.QuoteMeta(p)+"$")
		}
	}
	slices.Sort(out)
	return out
}

// CiliumHTTPAllows judges a request by a port's HTTP rules with Cilium's
// semantics: no rules allow everything (an L4-only port); otherwise a rule
// must match, and a rule matches when its method regex matches the whole
// method and its path regex the whole path (empty: any).
func CiliumHTTPAllows(rules []HTTPRule, method, path string) (bool, error) {
	if len(rules) == 0 {
		return true, nil
	}
	path = requestPath(path)
	for _, r := range rules {
		mOK, err := fullMatch(r.Method, method)
		if err != nil {
			return false, err
		}
		pOK, err := fullMatch(r.Path, path)
		if err != nil {
			return false, err
		}
		if mOK && pOK {
			return true, nil
		}
	}
	return false, nil
}

func fullMatch(expr, s string) (bool, error) {
	if expr == "" {
		return true, nil
	}
	re, err := regexp.CompilePOSIX("^(" + expr + ")$")
	if err != nil {
		return false, fmt.Errorf("cilium rule regex %q: %w", expr, err)
	}
	return re.MatchString(s), nil
}

// L7Note says what happened to one port of one policy.
type L7Note struct {
	Workload string
	Ingress  bool
	Protocol string
	Port     uint16
	L7       string // "http", "dns" or "" (stayed L4)
	Rules    int
	Reason   string
	// HeldBack counts the DNS names left out as evidence of a dns-tunnel
	// finding (L7Config.Flagged).
	HeldBack int
}

func (n L7Note) String() string {
	dir := "egress"
	if n.Ingress {
		dir = "ingress"
	}
	s := fmt.Sprintf("%s %s %s/%d: ", n.Workload, dir, n.Protocol, n.Port)
	if n.L7 != "" {
		s += fmt.Sprintf("%d %s rules", n.Rules, n.L7)
		if n.HeldBack > 0 {
			s += fmt.Sprintf(" (%d names held back as evidence of a dns-tunnel finding)", n.HeldBack)
		}
		return s
	}
	return s + "stays L4: " + n.Reason
}

// AddCiliumL7 adds HTTP and DNS rules to the Cilium policies (ToCilium's
// output) where the observations allow, splitting multi-port rules so that
// each port carries its own rules, and says for every port what it did.
func AddCiliumL7(cps []CiliumPolicy, obs *L7Observations, cfg L7Config, namePrefix string) []L7Note {
	var notes []L7Note
	cfg.tunnels = tunnelDomains(cfg.Flagged)
	for ci := range cps {
		cp := &cps[ci]
		ns, _ := cp.Metadata["namespace"].(string)
		name, _ := cp.Metadata["name"].(string)
		workload := ns + "/" + strings.TrimPrefix(name, namePrefix)
		// A policy selecting every pod of the namespace (the default deny,
		// with its DNS rule): Cilium merges DNS rules of all policies
		// selecting a pod, so its rule names every name the namespace's
		// workloads looked up; "*" there would undo the per-workload names.
		wide := ""
		if sel := cp.Spec.EndpointSelector.MatchLabels; len(sel) == 0 || (len(sel) == 1 && sel[ciliumNS] != "") {
			wide = ns
		}
		for i := range cp.Spec.Ingress {
			cp.Spec.Ingress[i].ToPorts = obs.l7Ports(cp.Spec.Ingress[i].ToPorts, workload, wide, true, cfg, &notes)
		}
		for i := range cp.Spec.Egress {
			cp.Spec.Egress[i].ToPorts = obs.l7Ports(cp.Spec.Egress[i].ToPorts, workload, wide, false, cfg, &notes)
		}
	}
	return notes
}

func (o *L7Observations) l7Ports(in []PortRule, workload, wideNS string, ingress bool, cfg L7Config, notes *[]L7Note) []PortRule {
	var out []PortRule
	for _, pr := range in {
		isDNS := pr.Rules != nil && len(pr.Rules.DNS) > 0
		for _, pp := range pr.Ports {
			port, err := strconv.Atoi(pp.Port)
			one := PortRule{Ports: []PortProtocol{pp}}
			if isDNS {
				one.Rules = &L7Rules{DNS: slices.Clone(pr.Rules.DNS)}
			}
			if err != nil || port == 0 {
				out = append(out, one)
				continue
			}
			note := L7Note{Workload: workload, Ingress: ingress, Protocol: pp.Protocol, Port: uint16(port)}
			obsPort := o.ports[l7Key{workload, ingress, pp.Protocol, uint16(port)}]
			switch {
			case isDNS:
				// The names looked up on this port over UDP or TCP (a
				// resolver retries over TCP), by the workload, or by any
				// workload of the namespace for a namespace-wide policy.
				names := map[string]uint64{}
				held := map[string]bool{}
				for k, p := range o.ports {
					mine := k.Workload == workload
					if wideNS != "" {
						mine = strings.HasPrefix(k.Workload, wideNS+"/")
					}
					if mine && !k.Ingress && k.Port == uint16(port) {
						for n, c := range p.dns {
							if cfg.tunnels.holds(k.Workload, n) {
								held[n] = true
								continue
							}
							names[n] += c
						}
					}
				}
				for n := range names {
					delete(held, n) // also looked up by a workload not flagged
				}
				note.HeldBack = len(held)
				if len(names) == 0 && len(held) > 0 {
					// Every name it looked up is the tunnel's: no list is
					// left to write, and an empty one is no DNS rule.
					note.Reason = fmt.Sprintf("every name looked up (%d) is evidence of a dns-tunnel finding: matchPattern \"*\" kept, block the domain by hand", len(held))
					break
				}
				if len(names) == 0 {
					note.Reason = "no DNS lookups seen by Cilium's DNS proxy: matchPattern \"*\" kept"
					break
				}
				var rules []DNSRule
				for _, n := range sortedKeys(names) {
					rules = append(rules, DNSRule{MatchPattern: n})
				}
				one.Rules = &L7Rules{DNS: rules}
				note.L7, note.Rules = "dns", len(rules)
			case obsPort == nil:
				note.Reason = "no traffic observed on this port"
			default:
				if ok, why := obsPort.httpOnly(); !ok {
					note.Reason = why
					break
				}
				one.Rules = &L7Rules{HTTP: obsPort.HTTPRules(cfg)}
				note.L7, note.Rules = "http", len(one.Rules.HTTP)
			}
			*notes = append(*notes, note)
			out = append(out, one)
		}
	}
	return mergeL4Ports(out)
}

// mergeL4Ports joins the port rules without L7 rules back into one, as
// ToCilium wrote them.
func mergeL4Ports(prs []PortRule) []PortRule {
	var out []PortRule
	l4 := -1
	for _, pr := range prs {
		if pr.Rules != nil {
			out = append(out, pr)
			continue
		}
		if l4 < 0 {
			l4 = len(out)
			out = append(out, PortRule{})
		}
		out[l4].Ports = append(out[l4].Ports, pr.Ports...)
	}
	return out
}

// ProveCiliumL7 checks the policies' HTTP rules against the observations
// with Cilium's semantics before they are written: every observed request
// on a port with HTTP rules is allowed by them, and a request nobody made
// (DELETE /admin, unless observed) is denied. It returns what failed.
func ProveCiliumL7(cps []CiliumPolicy, obs *L7Observations, namePrefix string) []string {
	var bad []string
	for _, cp := range cps {
		ns, _ := cp.Metadata["namespace"].(string)
		name, _ := cp.Metadata["name"].(string)
		workload := ns + "/" + strings.TrimPrefix(name, namePrefix)
		check := func(ingress bool, prs []PortRule) {
			for _, pr := range prs {
				if pr.Rules == nil || len(pr.Rules.HTTP) == 0 {
					continue
				}
				for _, pp := range pr.Ports {
					port, _ := strconv.Atoi(pp.Port)
					k := l7Key{workload, ingress, pp.Protocol, uint16(port)}
					p := o7(obs, k)
					for req := range p.http {
						if ok, err := CiliumHTTPAllows(pr.Rules.HTTP, req[0], req[1]); err != nil || !ok {
							bad = append(bad, fmt.Sprintf("%s: observed %s %s not allowed (%v)", L7Note{Workload: workload, Ingress: ingress, Protocol: pp.Protocol, Port: uint16(port), L7: "http"}, req[0], req[1], err))
						}
					}
					if _, seen := p.http[[2]string{"DELETE", "/admin"}]; !seen {
						if ok, _ := CiliumHTTPAllows(pr.Rules.HTTP, "DELETE", "/admin"); ok {
							bad = append(bad, fmt.Sprintf("%s/%s %s/%s: unobserved DELETE /admin allowed", workload, map[bool]string{true: "ingress", false: "egress"}[ingress], pp.Protocol, pp.Port))
						}
					}
				}
			}
		}
		for _, r := range cp.Spec.Ingress {
			check(true, r.ToPorts)
		}
		for _, r := range cp.Spec.Egress {
			check(false, r.ToPorts)
		}
	}
	return bad
}

func o7(obs *L7Observations, k l7Key) *l7Port {
	if p := obs.ports[k]; p != nil {
		return p
	}
	return &l7Port{}
}
