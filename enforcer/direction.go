package enforcer

import (
	"net/netip"
	"strings"

	"github.com/flowwarden/flowwarden/schema"
)

// Opener says which end of a flow opened its connection.
type Opener int

// Openers.
const (
	// OpenedBySource: the flow goes from the end that opened the
	// connection (the client) to the one that accepted it.
	OpenedBySource Opener = iota
	// OpenedByDestination: the flow is a reply, from the server back to
	// the client. Nothing may be learned from it.
	OpenedByDestination
	// OpenedUnknown: no signal says who opened it.
	OpenedUnknown
)

func (o Opener) String() string {
	switch o {
	case OpenedBySource:
		return "source"
	case OpenedByDestination:
		return "destination (a reply)"
	}
	return "unknown"
}

// Reasons a flow taught nothing, as counted in Graph.Ignored.
const (
	IgnoredNotForwarded     = "not forwarded"
	IgnoredReply            = "a reply"
	IgnoredDirectionUnknown = "direction unknown (no signal says which end opened the connection)"
)

// FlowOpener decides who opened a flow's connection from what the flow
// itself says, in this order:
//
//   - Hubble's is_reply (the older reply field is mapped to the same
//     field by the decoders): a reply;
//   - TCP flags: SYN without ACK opens; SYN+ACK and RST+ACK answer;
//   - Envoy access logs and conntrack: always from the opener (Envoy logs
//     downstream → upstream for inbound and outbound listeners alike;
//     conntrack reports the original tuple);
//   - Hubble flows with a traffic direction: Cilium looked the flow up in
//     its connection tracking table, and is_reply false then means not a
//     reply;
//   - Hubble drops: policy is judged on the packets that open connections.
//
// Anything else (Hubble records at observation points where Cilium did no
// lookup, such as TO_OVERLAY: no is_reply, no reply, no traffic direction)
// is OpenedUnknown: Listening.Opener may still settle it.
func FlowOpener(f *schema.Flow) Opener {
	if f.IsReply {
		return OpenedByDestination
	}
	if f.Protocol == "TCP" && f.TCPFlags != "" {
		syn, ack, rst := hasFlag(f.TCPFlags, "SYN"), hasFlag(f.TCPFlags, "ACK"), hasFlag(f.TCPFlags, "RST")
		switch {
		case syn && !ack:
			return OpenedBySource
		case syn && ack, rst && ack:
			return OpenedByDestination
		}
	}
	if f.Source != schema.SourceHubble {
		return OpenedBySource
	}
	if f.Direction == schema.DirectionIngress || f.Direction == schema.DirectionEgress {
		return OpenedBySource
	}
	if f.Verdict == schema.VerdictDropped {
		// Cilium judges policy on the packets that open a connection:
		// replies pass by connection tracking first. A drop with no
		// reply flag is taken as the opener's.
		return OpenedBySource
	}
	return OpenedUnknown
}

func hasFlag(flags, name string) bool {
	for f := range strings.SplitSeq(flags, ",") {
		if f == name {
			return true
		}
	}
	return false
}

// listenKey is a port an end was seen accepting connections on.
type listenKey struct {
	end      string // "ns/workload" or an address
	protocol string
	port     uint16
}

// endKey names a flow end for Listening: its workload, or its address.
func endKey(e *schema.Endpoint, ip netip.Addr) string {
	if isWorkload(e) {
		return e.Namespace + "/" + e.Workload
	}
	return ip.Unmap().String()
}

// Listening is the set of ports each end (workload or address) was seen
// accepting connections on, learned from the flows whose opener is known.
// It settles the flows FlowOpener cannot: the end whose port is one it
// listens on is the server. The answer depends only on the set, not on the
// order flows were learned in, once all are learned.
type Listening struct {
	ports map[listenKey]struct{}
}

// NewListening returns an empty set.
func NewListening() *Listening { return &Listening{ports: map[listenKey]struct{}{}} }

// Learn records the server port a flow shows, if its opener is known.
func (l *Listening) Learn(f *schema.Flow) {
	switch FlowOpener(f) {
	case OpenedBySource:
		if f.DstPort != 0 {
			l.ports[listenKey{endKey(&f.Dst, f.DstIP), f.Protocol, f.DstPort}] = struct{}{}
		}
	case OpenedByDestination:
		if f.SrcPort != 0 {
			l.ports[listenKey{endKey(&f.Src, f.SrcIP), f.Protocol, f.SrcPort}] = struct{}{}
		}
	}
}

// Listens reports whether the end was seen accepting connections on the port.
func (l *Listening) Listens(e *schema.Endpoint, ip netip.Addr, protocol string, port uint16) bool {
	return l.has(endKey(e, ip), protocol, port)
}

func (l *Listening) has(end, protocol string, port uint16) bool {
	if port == 0 {
		return false
	}
	_, ok := l.ports[listenKey{end, protocol, port}]
	return ok
}

// Opener is FlowOpener, with the flows it leaves unknown settled by the
// listening ports: from a port the source listens on to one the
// destination does not is a reply; the other way round, a request. A flow
// whose source port is not known (stored flows are read grouped without
// it) is a request only when its destination port is a listening one.
func (l *Listening) Opener(f *schema.Flow) Opener {
	o := FlowOpener(f)
	if o != OpenedUnknown {
		return o
	}
	srcListens := l.Listens(&f.Src, f.SrcIP, f.Protocol, f.SrcPort)
	dstListens := l.Listens(&f.Dst, f.DstIP, f.Protocol, f.DstPort)
	switch {
	case srcListens && !dstListens:
		return OpenedByDestination
	case dstListens && !srcListens:
		return OpenedBySource
	}
	return OpenedUnknown
}
