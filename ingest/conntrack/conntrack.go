// Package conntrack reads the kernel's connection tracking table over
// netlink (github.com/ti-mo/conntrack) and turns entries into flows with
// source "conntrack": the original tuple is the flow, and the counters of
// both directions (when nf_conntrack_acct=1) give its bytes and packets.
package conntrack

import (
	"fmt"
	"time"

	ct "github.com/ti-mo/conntrack"

	"github.com/flowwarden/flowwarden/schema"
)

var protocols = map[uint8]string{6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMPv4", 58: "ICMPv6"}

// ToFlow maps a conntrack entry to a flow seen at now (on node).
func ToFlow(f *ct.Flow, node string, now time.Time) schema.Flow {
	o := f.TupleOrig
	out := schema.Flow{
		Time: now, Node: node, Source: schema.SourceConntrack, Verdict: schema.VerdictForwarded,
		Direction: schema.DirectionUnknown,
		SrcIP:     o.IP.SourceAddress.Unmap(), DstIP: o.IP.DestinationAddress.Unmap(),
		SrcPort: o.Proto.SourcePort, DstPort: o.Proto.DestinationPort,
		Protocol: protocols[o.Proto.Protocol],
		Bytes:    f.CountersOrig.Bytes + f.CountersReply.Bytes,
		Packets:  f.CountersOrig.Packets + f.CountersReply.Packets,
	}
	if out.Protocol == "" {
		out.Protocol = fmt.Sprintf("proto-%d", o.Proto.Protocol)
	}
	if out.SrcIP.Is4() {
		out.IPVersion = 4
	} else if out.SrcIP.Is6() {
		out.IPVersion = 6
	}
	return out
}

// Dump returns the current entries as flows.
func Dump(conn *ct.Conn, node string, now time.Time) ([]schema.Flow, error) {
	entries, err := conn.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump: %w", err)
	}
	out := make([]schema.Flow, 0, len(entries))
	for i := range entries {
		out = append(out, ToFlow(&entries[i], node, now))
	}
	return out, nil
}
