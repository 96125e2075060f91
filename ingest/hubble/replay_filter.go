package hubble

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// The GetFlows filters of the replay server, with the semantics of Hubble's
// own server (cilium pkg/hubble/filters, v1.20), written from reading it: a
// request's whitelist keeps a flow that matches at least one of its
// FlowFilters (an empty whitelist keeps every flow), its blacklist then
// drops a flow that matches any of its FlowFilters; within one FlowFilter
// every field that is set must match (AND), and a field lists alternatives
// (OR). Only flow events are recorded, so agent, debug and lost events never
// reach these filters.

// accessLogEventType is the monitor message type of L7 (proxy access log)
// flows: Hubble refuses HTTP filters combined with other event types.
const accessLogEventType = 129

// defaultClusterName is the cluster a node name without one belongs to.
const defaultClusterName = "default"

// flowPredicate is one condition of a FlowFilter.
type flowPredicate func(*flowpb.Flow) bool

// flowFilter is a compiled FlowFilter: every predicate must hold.
type flowFilter []flowPredicate

func (ff flowFilter) match(f *flowpb.Flow) bool {
	for _, p := range ff {
		if !p(f) {
			return false
		}
	}
	return true
}

// flowFilters is a compiled whitelist or blacklist: any filter may hold.
type flowFilters []flowFilter

func (fs flowFilters) matchAny(f *flowpb.Flow) bool {
	return slices.ContainsFunc(fs, func(ff flowFilter) bool { return ff.match(f) })
}

// requestFilter is a request's whitelist and blacklist.
type requestFilter struct{ allow, deny flowFilters }

// newRequestFilter compiles the whitelist and blacklist of a request.
func newRequestFilter(whitelist, blacklist []*flowpb.FlowFilter) (requestFilter, error) {
	allow, err := compileFilters(whitelist)
	if err != nil {
		return requestFilter{}, fmt.Errorf("whitelist: %w", err)
	}
	deny, err := compileFilters(blacklist)
	if err != nil {
		return requestFilter{}, fmt.Errorf("blacklist: %w", err)
	}
	return requestFilter{allow: allow, deny: deny}, nil
}

// keep applies the whitelist, then the blacklist.
func (r requestFilter) keep(f *flowpb.Flow) bool {
	if len(r.allow) > 0 && !r.allow.matchAny(f) {
		return false
	}
	return !r.deny.matchAny(f)
}

func compileFilters(ffs []*flowpb.FlowFilter) (flowFilters, error) {
	out := make(flowFilters, 0, len(ffs))
	for i, ff := range ffs {
		c, err := compileFilter(ff)
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// compileFilter turns one FlowFilter into its predicates, refusing what
// Hubble refuses (bad addresses, ports, patterns, selectors) and what the
// replay cannot evaluate (CEL expressions).
func compileFilter(ff *flowpb.FlowFilter) (flowFilter, error) {
	var out flowFilter
	add := func(p flowPredicate) { out = append(out, p) }
	addErr := func(what string, p flowPredicate, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		add(p)
		return nil
	}

	if v := ff.GetUuid(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetUuid()) })
	}
	if v := ff.GetEventType(); len(v) > 0 {
		add(eventTypeMatch(v))
	}
	if v := ff.GetVerdict(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetVerdict()) })
	}
	if v := ff.GetDropReasonDesc(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool {
			return f.GetVerdict() == flowpb.Verdict_DROPPED && slices.Contains(v, f.GetDropReasonDesc())
		})
	}
	if v := ff.GetReply(); len(v) > 0 {
		add(replyMatch(v))
	}
	if v := ff.GetEncrypted(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetEncrypted()) })
	}
	if v := ff.GetSourceIdentity(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool {
			return f.GetSource() != nil && slices.Contains(v, f.GetSource().GetIdentity())
		})
	}
	if v := ff.GetDestinationIdentity(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool {
			return f.GetDestination() != nil && slices.Contains(v, f.GetDestination().GetIdentity())
		})
	}
	if v := ff.GetProtocol(); len(v) > 0 {
		p, err := protocolMatch(v)
		if err := addErr("protocol", p, err); err != nil {
			return nil, err
		}
	}
	for _, ips := range []struct {
		what string
		v    []string
		get  func(*flowpb.Flow) string
	}{
		{"source_ip", ff.GetSourceIp(), func(f *flowpb.Flow) string { return f.GetIP().GetSource() }},
		{"destination_ip", ff.GetDestinationIp(), func(f *flowpb.Flow) string { return f.GetIP().GetDestination() }},
		{"source_ip_xlated", ff.GetSourceIpXlated(), func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() }},
	} {
		if len(ips.v) > 0 {
			p, err := ipMatch(ips.v, ips.get)
			if err := addErr(ips.what, p, err); err != nil {
				return nil, err
			}
		}
	}
	if v := ff.GetIpVersion(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetIpVersion()) })
	}
	for _, names := range []struct {
		what string
		v    []string
		get  func(*flowpb.Flow) (ns, name string)
	}{
		{"source_pod", ff.GetSourcePod(), func(f *flowpb.Flow) (string, string) {
			return f.GetSource().GetNamespace(), f.GetSource().GetPodName()
		}},
		{"destination_pod", ff.GetDestinationPod(), func(f *flowpb.Flow) (string, string) {
			return f.GetDestination().GetNamespace(), f.GetDestination().GetPodName()
		}},
		{"source_service", ff.GetSourceService(), func(f *flowpb.Flow) (string, string) {
			return f.GetSourceService().GetNamespace(), f.GetSourceService().GetName()
		}},
		{"destination_service", ff.GetDestinationService(), func(f *flowpb.Flow) (string, string) {
			return f.GetDestinationService().GetNamespace(), f.GetDestinationService().GetName()
		}},
	} {
		if len(names.v) > 0 {
			p, err := namespacedNameMatch(names.v, names.get)
			if err := addErr(names.what, p, err); err != nil {
				return nil, err
			}
		}
	}
	if v := ff.GetSourceWorkload(); len(v) > 0 {
		add(workloadMatch(v, (*flowpb.Flow).GetSource))
	}
	if v := ff.GetDestinationWorkload(); len(v) > 0 {
		add(workloadMatch(v, (*flowpb.Flow).GetDestination))
	}
	if v := ff.GetSourceFqdn(); len(v) > 0 {
		p, err := fqdnMatch(v, (*flowpb.Flow).GetSourceNames)
		if err := addErr("source_fqdn", p, err); err != nil {
			return nil, err
		}
	}
	if v := ff.GetDestinationFqdn(); len(v) > 0 {
		p, err := fqdnMatch(v, (*flowpb.Flow).GetDestinationNames)
		if err := addErr("destination_fqdn", p, err); err != nil {
			return nil, err
		}
	}
	if v := ff.GetDnsQuery(); len(v) > 0 {
		res, err := compileRegexps(v)
		if err := addErr("dns_query", func(f *flowpb.Flow) bool {
			dns := f.GetL7().GetDns()
			return dns != nil && slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(dns.GetQuery()) })
		}, err); err != nil {
			return nil, err
		}
	}
	for _, ls := range []struct {
		what string
		v    []string
		get  func(*flowpb.Flow) []string
	}{
		{"source_label", ff.GetSourceLabel(), func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() }},
		{"destination_label", ff.GetDestinationLabel(), func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() }},
		{"node_labels", ff.GetNodeLabels(), (*flowpb.Flow).GetNodeLabels},
	} {
		if len(ls.v) > 0 {
			p, err := labelMatch(ls.v, ls.get)
			if err := addErr(ls.what, p, err); err != nil {
				return nil, err
			}
		}
	}
	if v := ff.GetSourcePort(); len(v) > 0 {
		p, err := portMatch(v, sourcePort)
		if err := addErr("source_port", p, err); err != nil {
			return nil, err
		}
	}
	if v := ff.GetDestinationPort(); len(v) > 0 {
		p, err := portMatch(v, destinationPort)
		if err := addErr("destination_port", p, err); err != nil {
			return nil, err
		}
	}
	if err := addHTTP(ff, add); err != nil {
		return nil, err
	}
	if v := ff.GetTcpFlags(); len(v) > 0 {
		add(tcpFlagsMatch(v))
	}
	if v := ff.GetNodeName(); len(v) > 0 {
		p, err := nodeNameMatch(v)
		if err := addErr("node_name", p, err); err != nil {
			return nil, err
		}
	}
	for _, cs := range []struct {
		what string
		v    []string
		get  func(*flowpb.Flow) string
	}{
		{"source_cluster_name", ff.GetSourceClusterName(), func(f *flowpb.Flow) string { return f.GetSource().GetClusterName() }},
		{"destination_cluster_name", ff.GetDestinationClusterName(), func(f *flowpb.Flow) string { return f.GetDestination().GetClusterName() }},
	} {
		if len(cs.v) > 0 {
			if slices.Contains(cs.v, "") {
				return nil, fmt.Errorf("%s: name must not be empty", cs.what)
			}
			v, get := cs.v, cs.get
			add(func(f *flowpb.Flow) bool { return slices.Contains(v, get(f)) })
		}
	}
	if v := ff.GetTraceId(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTraceContext().GetParent().GetTraceId()) })
	}
	if v := ff.GetIpTraceId(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIpTraceId().GetTraceId()) })
	}
	if v := ff.GetTrafficDirection(); len(v) > 0 {
		add(func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTrafficDirection()) })
	}
	if v := ff.GetInterface(); len(v) > 0 {
		add(interfaceMatch(v))
	}
	if len(ff.GetExperimental().GetCelExpression()) > 0 {
		return nil, errors.New("CEL expressions are not supported by the replay server")
	}
	return out, nil
}

// eventTypeMatch: a flow matches a type filter when the type is 0 (any) or
// equal, and, when the filter asks for it, the subtype is equal too.
func eventTypeMatch(types []*flowpb.EventTypeFilter) flowPredicate {
	return func(f *flowpb.Flow) bool {
		ev := f.GetEventType()
		if ev == nil {
			return false
		}
		return slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
			if t.GetType() != 0 && t.GetType() != ev.GetType() {
				return false
			}
			return !t.GetMatchSubType() || t.GetSubType() == ev.GetSubType()
		})
	}
}

// replyMatch reads is_reply; a flow whose direction is unknown never matches,
// except a dropped one, which counts as not a reply (as the deprecated reply
// field always said for drops).
func replyMatch(want []bool) flowPredicate {
	return func(f *flowpb.Flow) bool {
		if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
			return false
		}
		return slices.Contains(want, f.GetIsReply().GetValue())
	}
}

func protocolMatch(names []string) (flowPredicate, error) {
	want := make([]string, 0, len(names))
	for _, n := range names {
		p := strings.ToLower(n)
		switch p {
		case "icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "vrrp", "igmp", "dns", "http":
			want = append(want, p)
		default:
			return nil, fmt.Errorf("unknown protocol %q", n)
		}
	}
	return func(f *flowpb.Flow) bool {
		l4, l7 := f.GetL4(), f.GetL7()
		return slices.ContainsFunc(want, func(p string) bool {
			switch p {
			case "icmp":
				return l4.GetICMPv4() != nil || l4.GetICMPv6() != nil
			case "icmpv4":
				return l4.GetICMPv4() != nil
			case "icmpv6":
				return l4.GetICMPv6() != nil
			case "tcp":
				return l4.GetTCP() != nil
			case "udp":
				return l4.GetUDP() != nil
			case "sctp":
				return l4.GetSCTP() != nil
			case "vrrp":
				return l4.GetVRRP() != nil
			case "igmp":
				return l4.GetIGMP() != nil
			case "dns":
				return l7.GetDns() != nil
			default: // http
				return l7.GetHttp() != nil
			}
		})
	}, nil
}

// ipMatch: an entry with a slash is a CIDR, anything else an exact address
// (compared as the flow writes it, as Hubble does).
func ipMatch(entries []string, get func(*flowpb.Flow) string) (flowPredicate, error) {
	var exact []string
	var prefixes []netip.Prefix
	for _, e := range entries {
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("invalid IP prefix %q: %w", e, err)
			}
			prefixes = append(prefixes, p)
			continue
		}
		if _, err := netip.ParseAddr(e); err != nil {
			return nil, fmt.Errorf("invalid IP address %q: %w", e, err)
		}
		exact = append(exact, e)
	}
	return func(f *flowpb.Flow) bool {
		ip := get(f)
		if ip == "" {
			return false
		}
		if slices.Contains(exact, ip) {
			return true
		}
		if len(prefixes) == 0 {
			return false
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return false
		}
		return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	}, nil
}

// namespacedNameMatch reads entries as "namespace/name-prefix"; an entry
// without a slash is a name prefix in namespace "default", "ns/" is every
// name in ns. An endpoint with neither namespace nor name never matches.
func namespacedNameMatch(entries []string, get func(*flowpb.Flow) (ns, name string)) (flowPredicate, error) {
	type entry struct{ ns, prefix string }
	want := make([]entry, 0, len(entries))
	for _, e := range entries {
		if e == "" {
			return nil, errors.New("name must not be empty")
		}
		ns, name, found := strings.Cut(e, "/")
		if !found {
			ns, name = "default", e
		} else if i := strings.IndexByte(name, '/'); i >= 0 {
			name = name[:i] // Hubble ignores anything after a second slash
		}
		want = append(want, entry{ns, name})
	}
	return func(f *flowpb.Flow) bool {
		ns, name := get(f)
		if ns == "" && name == "" {
			return false
		}
		return slices.ContainsFunc(want, func(w entry) bool {
			return (w.ns == "" || w.ns == ns) && strings.HasPrefix(name, w.prefix)
		})
	}, nil
}

func workloadMatch(want []*flowpb.Workload, ep func(*flowpb.Flow) *flowpb.Endpoint) flowPredicate {
	return func(f *flowpb.Flow) bool {
		return slices.ContainsFunc(ep(f).GetWorkloads(), func(w *flowpb.Workload) bool {
			return slices.ContainsFunc(want, func(x *flowpb.Workload) bool {
				return (x.GetName() == "" || x.GetName() == w.GetName()) && (x.GetKind() == "" || x.GetKind() == w.GetKind())
			})
		})
	}
}

// fqdnLabel is what a "*" of a name pattern cannot match beyond, and what an
// empty cluster or node part of a node-name pattern stands for.
const fqdnAny = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

// fqdnPatternRegexp writes a DNS name pattern ("*.example.com") as a regular
// expression: case-insensitive through lower-casing, one trailing dot
// ignored, "*" matching letters, digits, dashes and dots.
func fqdnPatternRegexp(sb *strings.Builder, pattern string) error {
	p := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(pattern), "."))
	switch {
	case p == "":
		return errors.New("empty pattern")
	case strings.HasSuffix(p, "."):
		return errors.New("more than one trailing dot in pattern")
	}
	for _, r := range p {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-', r == '_', '0' <= r && r <= '9', 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("invalid character %q in pattern %q", r, pattern)
		}
	}
	return nil
}

func anchoredAlternatives(patterns []string, write func(*strings.Builder, string) error) (*regexp.Regexp, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range patterns {
		if i > 0 {
			sb.WriteByte('|')
		}
		if err := write(&sb, p); err != nil {
			return nil, err
		}
	}
	sb.WriteString(`)\z`)
	return regexp.Compile(sb.String())
}

func fqdnMatch(patterns []string, names func(*flowpb.Flow) []string) (flowPredicate, error) {
	re, err := anchoredAlternatives(patterns, fqdnPatternRegexp)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool { return slices.ContainsFunc(names(f), re.MatchString) }, nil
}

// nodeNameMatch: patterns are "[cluster/]node" with "*" wildcards; a node
// name without a cluster belongs to cluster "default"; an empty pattern part
// matches any name.
func nodeNameMatch(patterns []string) (flowPredicate, error) {
	re, err := anchoredAlternatives(patterns, func(sb *strings.Builder, p string) error {
		if p == "" {
			return errors.New("empty pattern")
		}
		parts := strings.Split(p, "/")
		var cluster, node string
		switch len(parts) {
		case 1:
			node = parts[0]
		case 2:
			cluster, node = parts[0], parts[1]
		default:
			return fmt.Errorf("too many slashes in pattern %q", p)
		}
		for i, part := range []string{cluster, node} {
			if i == 1 {
				sb.WriteByte('/')
			}
			if part == "" {
				sb.WriteString(fqdnAny)
			} else if err := fqdnPatternRegexp(sb, part); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		n := f.GetNodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = defaultClusterName + "/" + n
		}
		return re.MatchString(n)
	}, nil
}

func sourcePort(f *flowpb.Flow) (uint32, bool) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return l4.GetTCP().GetSourcePort(), true
	case l4.GetUDP() != nil:
		return l4.GetUDP().GetSourcePort(), true
	case l4.GetSCTP() != nil:
		return l4.GetSCTP().GetSourcePort(), true
	}
	return 0, false
}

func destinationPort(f *flowpb.Flow) (uint32, bool) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return l4.GetTCP().GetDestinationPort(), true
	case l4.GetUDP() != nil:
		return l4.GetUDP().GetDestinationPort(), true
	case l4.GetSCTP() != nil:
		return l4.GetSCTP().GetDestinationPort(), true
	}
	return 0, false
}

func portMatch(entries []string, get func(*flowpb.Flow) (uint32, bool)) (flowPredicate, error) {
	ports := make([]uint16, 0, len(entries))
	for _, e := range entries {
		p, err := strconv.ParseUint(e, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q: %w", e, err)
		}
		ports = append(ports, uint16(p))
	}
	return func(f *flowpb.Flow) bool {
		p, ok := get(f)
		return ok && slices.Contains(ports, uint16(p))
	}, nil
}

func compileRegexps(exprs []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e, err)
		}
		out = append(out, re)
	}
	return out, nil
}

var (
	httpStatusFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	httpStatusPrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

// addHTTP adds the HTTP conditions: status codes ("404" or prefixes "4+",
// "40+"), methods (any case), URL regexps, path regexps (on the parsed
// request URI's path) and headers (exact key and value). Each needs the
// filter's event types, if any, to include L7.
func addHTTP(ff *flowpb.FlowFilter, add func(flowPredicate)) error {
	needL7 := func(what string) error {
		types := ff.GetEventType()
		if len(types) == 0 || slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool { return t.GetType() == accessLogEventType }) {
			return nil
		}
		return fmt.Errorf("filtering by http %s requires the event type filter to only match 'l7' events", what)
	}
	if v := ff.GetHttpStatusCode(); len(v) > 0 {
		if err := needL7("status code"); err != nil {
			return err
		}
		var full, prefix []string
		for _, s := range v {
			switch {
			case httpStatusFull.MatchString(s):
				full = append(full, s)
			case httpStatusPrefix.MatchString(s):
				prefix = append(prefix, strings.TrimSuffix(s, "+"))
			default:
				return fmt.Errorf("invalid http status code prefix %q", s)
			}
		}
		add(func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h == nil || h.GetCode() == 0 {
				return false
			}
			code := fmt.Sprintf("%03d", h.GetCode())
			return slices.Contains(full, code) || slices.ContainsFunc(prefix, func(p string) bool { return strings.HasPrefix(code, p) })
		})
	}
	if v := ff.GetHttpMethod(); len(v) > 0 {
		if err := needL7("method"); err != nil {
			return err
		}
		add(func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h.GetMethod() == "" {
				return false
			}
			return slices.ContainsFunc(v, func(m string) bool { return strings.EqualFold(m, h.GetMethod()) })
		})
	}
	if v := ff.GetHttpPath(); len(v) > 0 {
		if err := needL7("path"); err != nil {
			return err
		}
		res, err := compileRegexps(v)
		if err != nil {
			return fmt.Errorf("http_path: %w", err)
		}
		add(func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h.GetUrl() == "" {
				return false
			}
			u, err := url.ParseRequestURI(h.GetUrl())
			if err != nil {
				return false
			}
			return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(u.Path) })
		})
	}
	if v := ff.GetHttpUrl(); len(v) > 0 {
		if err := needL7("url"); err != nil {
			return err
		}
		res, err := compileRegexps(v)
		if err != nil {
			return fmt.Errorf("http_url: %w", err)
		}
		add(func(f *flowpb.Flow) bool {
			u := f.GetL7().GetHttp().GetUrl()
			return u != "" && slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(u) })
		})
	}
	if v := ff.GetHttpHeader(); len(v) > 0 {
		if err := needL7("headers"); err != nil {
			return err
		}
		add(func(f *flowpb.Flow) bool {
			return slices.ContainsFunc(f.GetL7().GetHttp().GetHeaders(), func(h *flowpb.HTTPHeader) bool {
				return slices.ContainsFunc(v, func(w *flowpb.HTTPHeader) bool {
					return w.GetKey() == h.GetKey() && w.GetValue() == h.GetValue()
				})
			})
		})
	}
	return nil
}

// tcpFlagsMatch: a flow matches a flag set when it has every flag of the
// set (it may have more).
func tcpFlagsMatch(sets []*flowpb.TCPFlags) flowPredicate {
	return func(f *flowpb.Flow) bool {
		have := f.GetL4().GetTCP().GetFlags()
		if have == nil {
			return false
		}
		return slices.ContainsFunc(sets, func(w *flowpb.TCPFlags) bool {
			return (!w.GetFIN() || have.GetFIN()) && (!w.GetSYN() || have.GetSYN()) &&
				(!w.GetRST() || have.GetRST()) && (!w.GetPSH() || have.GetPSH()) &&
				(!w.GetACK() || have.GetACK()) && (!w.GetURG() || have.GetURG()) &&
				(!w.GetECE() || have.GetECE()) && (!w.GetCWR() || have.GetCWR()) &&
				(!w.GetNS() || have.GetNS())
		})
	}
}

func interfaceMatch(want []*flowpb.NetworkInterface) flowPredicate {
	return func(f *flowpb.Flow) bool {
		iface := f.GetInterface()
		if iface == nil {
			return false
		}
		return slices.ContainsFunc(want, func(w *flowpb.NetworkInterface) bool {
			return (w.GetIndex() == 0 || w.GetIndex() == iface.GetIndex()) && (w.GetName() == "" || w.GetName() == iface.GetName())
		})
	}
}

// Labels. Hubble's label filters are Kubernetes label selectors over Cilium
// labels ("k8s:app=web", "reserved:world"): a selector key may name a source
// ("k8s:app") or not ("app", any source). The selector is rewritten to a
// Kubernetes one whose keys carry the source before a dot ("any.app",
// "k8s.app") and evaluated with apimachinery's parser over the flow's labels.

// ciliumLabel is a parsed "source:key=value" label.
type ciliumLabel struct{ source, key, value string }

func parseCiliumLabel(s string) ciliumLabel {
	var l ciliumLabel
	if strings.HasPrefix(s, "$") { // short form of a reserved label
		l.source, s = "reserved", s[1:]
	} else if src, rest, ok := strings.Cut(s, ":"); ok {
		l.source, s = src, rest
	}
	if l.source == "" {
		l.source = "unspec"
	}
	if i := strings.IndexByte(s, '='); i < 0 {
		l.key = s
	} else if i == 0 && l.source == "reserved" {
		l.key = s[1:]
	} else {
		l.key, l.value = s[:i], s[i+1:]
	}
	return l
}

// flowLabels implements k8slabels.Labels over a flow's labels; a looked-up
// key is "source.key", source "any" matching every source.
type flowLabels []ciliumLabel

func (ls flowLabels) Lookup(key string) (string, bool) {
	src, k, ok := strings.Cut(key, ".")
	if !ok || src == "" {
		src, k = "any", key
	}
	for _, l := range ls {
		if src != "any" && l.source != src {
			continue
		}
		if l.key == k || (src == "cidr" && l.source == "cidr" && cidrLabelWithin(k, l.key)) {
			return l.value, true
		}
	}
	return "", false
}

func (ls flowLabels) Has(key string) bool {
	_, ok := ls.Lookup(key)
	return ok
}

func (ls flowLabels) Get(key string) string {
	v, _ := ls.Lookup(key)
	return v
}

// cidrLabelWithin reports whether the CIDR label key have ("10.0.0.0/24",
// IPv6 written with dashes) lies within want.
func cidrLabelWithin(want, have string) bool {
	parse := func(s string) (netip.Prefix, bool) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			p, err = netip.ParsePrefix(strings.ReplaceAll(s, "-", ":"))
		}
		return p, err == nil
	}
	w, ok1 := parse(want)
	h, ok2 := parse(have)
	return ok1 && ok2 && w.Bits() <= h.Bits() && w.Contains(h.Addr())
}

// translateSelector rewrites a Hubble label selector into a Kubernetes one:
// each key gets its source before a dot ("app" -> "any.app", "k8s:app" ->
// "k8s.app"); operators, values and parenthesised sets are kept.
func translateSelector(sel string) string {
	var out strings.Builder
	rs := []rune(sel)
	i := 0
	for i < len(rs) {
		// Spaces and "!" before a key.
		for i < len(rs) && (unicode.IsSpace(rs[i]) || rs[i] == '!') {
			out.WriteRune(rs[i])
			i++
		}
		// The key, up to a space, an operator or a comma.
		start := i
		for i < len(rs) && !unicode.IsSpace(rs[i]) && !strings.ContainsRune("=!,", rs[i]) {
			i++
		}
		key := string(rs[start:i])
		if !strings.Contains(key, ":") {
			key = "any:" + key
		}
		out.WriteString(strings.Replace(key, ":", ".", 1))
		// The rest of this requirement, up to a comma outside parentheses.
		depth := 0
		for i < len(rs) {
			r := rs[i]
			out.WriteRune(r)
			i++
			if r == '(' {
				depth++
			} else if r == ')' {
				depth--
			} else if r == ',' && depth == 0 {
				break
			}
		}
	}
	return out.String()
}

func labelMatch(selectors []string, get func(*flowpb.Flow) []string) (flowPredicate, error) {
	sels := make([]k8slabels.Selector, 0, len(selectors))
	for _, s := range selectors {
		sel, err := k8slabels.Parse(translateSelector(s))
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %w", s, err)
		}
		sels = append(sels, sel)
	}
	return func(f *flowpb.Flow) bool {
		raw := get(f)
		ls := make(flowLabels, len(raw))
		for i, s := range raw {
			ls[i] = parseCiliumLabel(s)
		}
		return slices.ContainsFunc(sels, func(sel k8slabels.Selector) bool { return sel.Matches(ls) })
	}, nil
}
