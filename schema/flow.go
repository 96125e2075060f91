// Package schema is flowwarden's data model: the one flow record every source
// fills, the findings detectors emit, and the small enums they share. It holds
// plain types and pure helpers only; no I/O.
package schema

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// SourceKind names where a flow record came from.
type SourceKind string

// The flow sources.
const (
	SourceHubble    SourceKind = "hubble"
	SourceEnvoy     SourceKind = "envoy"
	SourceConntrack SourceKind = "conntrack"
)

// Verdict is what the datapath did with the flow, named as Hubble names it.
type Verdict string

// Verdicts (Hubble's names; ERROR and the rest pass through as-is).
const (
	VerdictUnknown    Verdict = "VERDICT_UNKNOWN"
	VerdictForwarded  Verdict = "FORWARDED"
	VerdictDropped    Verdict = "DROPPED"
	VerdictError      Verdict = "ERROR"
	VerdictAudit      Verdict = "AUDIT"
	VerdictRedirected Verdict = "REDIRECTED"
	VerdictTraced     Verdict = "TRACED"
	VerdictTranslated Verdict = "TRANSLATED"
)

// Direction is the traffic direction relative to the observing endpoint.
type Direction string

// Directions.
const (
	DirectionUnknown Direction = "UNKNOWN"
	DirectionIngress Direction = "INGRESS"
	DirectionEgress  Direction = "EGRESS"
)

// Reserved workload kinds and names. A reserved endpoint (Cilium's
// reserved:world, reserved:host, ...) has WorkloadKind "reserved" and the
// identity's name ("world", "host", "kube-apiserver") as Workload.
const (
	KindReserved  = "reserved"
	ReservedWorld = "world"
	ReservedHost  = "host"
)

// Endpoint is one side of a flow.
type Endpoint struct {
	Namespace    string
	Pod          string
	Workload     string
	WorkloadKind string
	// Labels are the endpoint's labels as key → value with the "k8s:" source
	// prefix removed; labels of other sources keep their prefix
	// ("reserved:world" → "").
	Labels   map[string]string
	Identity uint32
}

// IsWorld reports whether the endpoint is outside the cluster (Cilium's
// reserved:world identities, or a CIDR/FQDN identity).
func (e *Endpoint) IsWorld() bool {
	if e.WorkloadKind == KindReserved {
		return strings.HasPrefix(e.Workload, ReservedWorld)
	}
	return e.Identity == 2 || e.Identity == 9 || e.Identity == 10 || e.Identity >= 1<<24
}

// Flow is one observed flow event, from any source. Field names follow the
// ClickHouse columns they are stored in.
type Flow struct {
	Time       time.Time
	Node       string
	Source     SourceKind
	Verdict    Verdict
	DropReason string
	Direction  Direction
	IsReply    bool
	IPVersion  uint8
	// Protocol is TCP, UDP, ICMPv4, ICMPv6, SCTP or "" when unknown.
	Protocol string
	SrcIP    netip.Addr
	DstIP    netip.Addr
	SrcPort  uint16
	DstPort  uint16
	// TCPFlags is the canonical comma-joined set ("SYN,ACK"); see TCPFlagNames.
	TCPFlags string
	Src      Endpoint
	Dst      Endpoint
	// DstNames are DNS names the destination IP was resolved from.
	DstNames []string
	// L7Type is "dns", "http", "kafka" or "".
	L7Type   string
	DNSQuery string
	DNSRCode uint16
	// DNSQType is the query's record type ("A", "AAAA", "TXT"...), the
	// types comma-joined in Hubble's order when a query asks several.
	DNSQType   string
	HTTPMethod string
	HTTPPath   string
	HTTPStatus uint16
	Bytes      uint64
	Packets    uint64
	DurationMs uint32
	MTLS       bool
	// Principals are SPIFFE IDs when the mesh reports them.
	SrcPrincipal string
	DstPrincipal string
	// PolicyNames are "namespace/name" of the policies that allowed or denied it.
	PolicyNames []string
	TraceID     string
}

// TCPFlagNames is the canonical order of TCP flag names in Flow.TCPFlags.
var TCPFlagNames = [...]string{"SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS"}

// TCPFlagsString returns the canonical string for a bit set where bit i is
// TCPFlagNames[i]. Common sets are returned without allocating.
func TCPFlagsString(bits uint16) string {
	if int(bits) < len(tcpFlagStrings) {
		return tcpFlagStrings[bits]
	}
	return ""
}

var tcpFlagStrings = func() []string {
	out := make([]string, 1<<len(TCPFlagNames))
	for b := range out {
		var parts []string
		for i, n := range TCPFlagNames {
			if b&(1<<i) != 0 {
				parts = append(parts, n)
			}
		}
		out[b] = strings.Join(parts, ",")
	}
	return out
}()

// FlowKey identifies a flow event well enough to recognise the same event
// delivered twice (a stream resumed at a timestamp it had reached).
func FlowKey(f *Flow) string {
	return f.Time.UTC().Format(time.RFC3339Nano) + "|" + f.Node + "|" + string(f.Verdict) + "|" + strconv.FormatBool(f.IsReply) + "|" +
		f.Protocol + "|" + f.SrcIP.Unmap().String() + ":" + strconv.Itoa(int(f.SrcPort)) + ">" + f.DstIP.Unmap().String() + ":" + strconv.Itoa(int(f.DstPort))
}
