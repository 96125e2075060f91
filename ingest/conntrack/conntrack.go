// Package conntrack reads the kernel's connection tracking table over
// netlink (github.com/ti-mo/conntrack) and turns entries into flows with
// source "conntrack": the original tuple is the flow, and the counters of
// both directions (when nf_conntrack_acct=1) give its bytes and packets.
package conntrack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ti-mo/netfilter"

	ct "github.com/ti-mo/conntrack"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

var protocols = map[uint8]string{6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMPv4", 58: "ICMPv6"}

// ToFlow maps a conntrack entry to a flow seen at now (on node). The source
// is the original tuple's (the initiator, before any SNAT); the destination
// is the reply tuple's source, the peer that actually answered: after a
// DNAT (a Service address, a NodePort, a redirect) that is the backend and
// its port, which is also what the node's input chain sees. Without NAT the
// two tuples mirror each other.
func ToFlow(f *ct.Flow, node string, now time.Time) schema.Flow {
	o, r := f.TupleOrig, f.TupleReply
	dst, dport := o.IP.DestinationAddress, o.Proto.DestinationPort
	if r.IP.SourceAddress.IsValid() && r.Proto.Protocol == o.Proto.Protocol {
		dst, dport = r.IP.SourceAddress, r.Proto.SourcePort
	}
	out := schema.Flow{
		Time: now, Node: node, Source: schema.SourceConntrack, Verdict: schema.VerdictForwarded,
		Direction: schema.DirectionUnknown,
		SrcIP:     o.IP.SourceAddress.Unmap(), DstIP: dst.Unmap(),
		SrcPort: o.Proto.SourcePort, DstPort: dport,
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

// Config configures a Poller.
type Config struct {
	// Node is recorded with every flow.
	Node string
	// Interval is how often the table is dumped (default 10s).
	Interval time.Duration
	// Report is how often connections that stay open are reported
	// (default 60s); ended ones are reported when they end.
	Report time.Duration
	// LocalAddresses, when set, lists the node's own addresses; it is
	// called at every dump, so address changes are followed. A flow to one
	// of them is INGRESS (the node's input chain sees it), a flow from one
	// EGRESS, anything else (traffic the node forwards, or talks to itself
	// over) UNKNOWN. This is how a host firewall made later, anywhere,
	// tells the node's inbound traffic apart without being told the node's
	// addresses.
	LocalAddresses func() ([]netip.Addr, error)
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Interval: 10 * time.Second, Report: 60 * time.Second} }

// Poller reports the connections of the conntrack table as flows: a flow
// when a connection ends (from the kernel's DESTROY event, with its final
// counters), and one every Report for connections that stay open, carrying
// the bytes and packets since the previous report, so the flows of one
// connection add up to its totals. The table is dumped every Interval; that
// also catches connections that predate the start and, when an event was
// lost (or there is no events socket), connections that vanished between
// dumps.
type Poller struct {
	cfg  Config
	conn *ct.Conn
	// events, when set, is a second socket the poller subscribes to
	// DESTROY events on; the poller closes it when Run returns.
	events *ct.Conn
	sink   ingest.Sink
	log    *slog.Logger

	// Counts of flows reported, by cause; read them after Run returns.
	Ended, Vanished, Open uint64

	state map[connKey]*tracked
	local map[netip.Addr]bool
}

// New returns a poller that dumps conn and, when events is not nil,
// listens for DESTROY events on it, and writes the flows to sink. It does
// no I/O until Run.
func New(cfg Config, conn, events *ct.Conn, sink ingest.Sink, log *slog.Logger) (*Poller, error) {
	if conn == nil {
		return nil, errors.New("conntrack: no netlink socket")
	}
	if sink == nil {
		return nil, errors.New("conntrack: no sink")
	}
	def := DefaultConfig()
	if cfg.Interval <= 0 {
		cfg.Interval = def.Interval
	}
	if cfg.Report <= 0 {
		cfg.Report = def.Report
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{cfg: cfg, conn: conn, events: events, sink: sink, log: log}, nil
}

// connKey tells connections apart: the kernel reuses IDs.
type connKey struct {
	id           uint32
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
}

type tracked struct {
	last                   ct.Flow
	sentBytes, sentPackets uint64
	lastReport             time.Time
	goneSince              time.Time
	// reported: a flow of this connection went out. Without accounting
	// (no counters) a connection is reported once, when first due.
	reported bool
}

func keyOf(f *ct.Flow) connKey {
	o := f.TupleOrig
	return connKey{f.ID, o.IP.SourceAddress, o.IP.DestinationAddress, o.Proto.SourcePort, o.Proto.DestinationPort, o.Proto.Protocol}
}

// delta is the flow of f's counters not yet reported; false when there is
// nothing to report (counters went backwards, or no traffic since the
// connection's last flow).
func (p *Poller) delta(f *ct.Flow, st *tracked, now time.Time) (schema.Flow, bool) {
	out := ToFlow(f, p.cfg.Node, now)
	switch toNode, fromNode := p.local[out.DstIP], p.local[out.SrcIP]; {
	case toNode && !fromNode:
		out.Direction = schema.DirectionIngress
	case fromNode && !toNode:
		out.Direction = schema.DirectionEgress
	}
	if st != nil {
		if out.Bytes < st.sentBytes || out.Packets < st.sentPackets {
			return out, false // counters went backwards: a reused entry; report nothing twice
		}
		out.Bytes -= st.sentBytes
		out.Packets -= st.sentPackets
		if out.Bytes == 0 && out.Packets == 0 && st.reported {
			return out, false
		}
		st.reported = true
		st.sentBytes += out.Bytes
		st.sentPackets += out.Packets
		st.lastReport = now
	}
	return out, true
}

// Run reports until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	p.state = map[connKey]*tracked{}
	var events chan ct.Event
	var errs chan error
	if p.events != nil {
		events = make(chan ct.Event, 4096)
		var err error
		if errs, err = p.events.Listen(events, 1, []netfilter.NetlinkGroup{netfilter.GroupCTDestroy}); err != nil {
			p.log.Warn("conntrack: no destroy events; connections are reported when they vanish from the dumps", "err", err)
			p.events.Close()
			p.events, events = nil, nil
		} else {
			defer p.events.Close()
		}
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if err := p.poll(ctx, time.Now()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case ev := <-events:
			if err := p.destroyed(ctx, ev, events); err != nil {
				return err
			}
		case err := <-errs:
			p.log.Warn("conntrack events stopped; relying on dumps", "err", err)
			events, errs = nil, nil
		}
	}
}

// destroyed reports the connections whose DESTROY events are queued.
func (p *Poller) destroyed(ctx context.Context, first ct.Event, queue chan ct.Event) error {
	now := time.Now()
	var out []schema.Flow
	for ev, more := first, true; more; {
		if ev.Type == ct.EventDestroy && ev.Flow != nil {
			k := keyOf(ev.Flow)
			if f, ok := p.delta(ev.Flow, p.state[k], now); ok {
				out = append(out, f)
				p.Ended++
			}
			delete(p.state, k)
		}
		select {
		case ev = <-queue:
		default:
			more = false
		}
	}
	if len(out) == 0 {
		return nil
	}
	return p.sink.Write(ctx, out...)
}

func (p *Poller) poll(ctx context.Context, now time.Time) error {
	if p.cfg.LocalAddresses != nil {
		addrs, err := p.cfg.LocalAddresses()
		if err != nil {
			return fmt.Errorf("conntrack: the node's addresses: %w", err)
		}
		p.local = make(map[netip.Addr]bool, len(addrs))
		for _, a := range addrs {
			p.local[a.Unmap()] = true
		}
	}
	entries, err := p.conn.Dump(nil)
	if err != nil {
		return fmt.Errorf("conntrack dump: %w", err)
	}
	present := make(map[connKey]bool, len(entries))
	var out []schema.Flow
	for i := range entries {
		k := keyOf(&entries[i])
		present[k] = true
		st := p.state[k]
		if st == nil {
			st = &tracked{lastReport: now}
			p.state[k] = st
		}
		st.last, st.goneSince = entries[i], time.Time{}
		if now.Sub(st.lastReport) >= p.cfg.Report {
			if f, ok := p.delta(&entries[i], st, now); ok {
				out = append(out, f)
				p.Open++
			}
		}
	}
	// Gone without an event: report what was last seen. With events on,
	// wait two intervals for the event that has the final counters.
	for k, st := range p.state {
		if present[k] {
			continue
		}
		if st.goneSince.IsZero() {
			st.goneSince = now
		}
		if p.events == nil || now.Sub(st.goneSince) >= 2*p.cfg.Interval {
			if f, ok := p.delta(&st.last, st, now); ok {
				out = append(out, f)
				p.Vanished++
			}
			delete(p.state, k)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return p.sink.Write(ctx, out...)
}
