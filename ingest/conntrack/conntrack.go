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

// Poller dumps the table every Interval and hands over each connection the
// first time it is seen (with the counters it had then); entries that
// disappeared are forgotten. Conntrack events (ti-mo/conntrack Listen on
// DESTROY) would give final counters; the dump needs no extra socket
// privileges beyond CAP_NET_ADMIN and sees connections that predate start.
type Poller struct {
	Conn     *ct.Conn
	Node     string
	Interval time.Duration
	Sink     func(flows []schema.Flow) error
	seen     map[uint32]bool
}

// Run polls until ctx's done channel closes.
func (p *Poller) Run(done <-chan struct{}) error {
	if p.Interval <= 0 {
		p.Interval = 10 * time.Second
	}
	p.seen = map[uint32]bool{}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		entries, err := p.Conn.Dump(nil)
		if err != nil {
			return fmt.Errorf("conntrack dump: %w", err)
		}
		now := time.Now()
		current := make(map[uint32]bool, len(entries))
		var fresh []schema.Flow
		for i := range entries {
			id := entries[i].ID
			current[id] = true
			if !p.seen[id] {
				fresh = append(fresh, ToFlow(&entries[i], p.Node, now))
			}
		}
		p.seen = current
		if len(fresh) > 0 {
			if err := p.Sink(fresh); err != nil {
				return err
			}
		}
		select {
		case <-done:
			return nil
		case <-t.C:
		}
	}
}
