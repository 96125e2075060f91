package enforcer

import (
	"net/netip"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// PeerKind says what an edge's end is.
type PeerKind int

// Peer kinds.
const (
	PeerWorkload PeerKind = iota // a pod of a workload
	PeerExternal                 // an address outside the cluster (or unknown)
	PeerNode                     // a node address (remote node, API server)
)

// Peer is one end of an observed edge.
type Peer struct {
	Kind     PeerKind
	Workload string     // "ns/name" for PeerWorkload
	Addr     netip.Addr // for PeerExternal and PeerNode
	Name     string     // a DNS name for the address, when seen
}

// Edge is observed traffic from one peer to another on one port.
type Edge struct {
	From, To Peer
	Port     uint16
	Protocol string
}

// EdgeStats is the evidence for an edge.
type EdgeStats struct {
	Flows       uint64
	First, Last time.Time
}

// Graph is the observed-edge graph: who talks to whom, on which ports.
type Graph struct {
	Workloads map[string]*Workload
	// NamespaceLabels are the labels Cilium mirrored from each namespace.
	NamespaceLabels map[string]map[string]string
	Edges           map[Edge]*EdgeStats
	// Ignored counts flows left out, by reason.
	Ignored map[string]uint64
	pods    map[podKey]int // label count of the sets learned per pod
	// unlabelled are workloads seen only with unknown labels so far.
	unlabelled map[string]bool
	// listening and pending settle the flows whose opener is unknown
	// once every flow is in (Settle): which ports each end listens on.
	listening *Listening
	pending   map[pendingKey]*pendingFlow
	// deniedSink, when set, receives the dropped flows Settle finds were
	// requests (the report's denied traffic).
	deniedSink map[Edge]*EdgeStats
}

// pendingKey is a conversation whose opener is not known yet.
type pendingKey struct {
	edge           Edge // as if the source opened it
	srcEnd, dstEnd string
	srcPort        uint16
	dropped        bool
}

type pendingFlow struct {
	stats    EdgeStats
	src, dst schema.Endpoint
}

type podKey struct{ namespace, pod string }

// NewGraph returns an empty graph.
func NewGraph() *Graph {
	return &Graph{Workloads: map[string]*Workload{}, NamespaceLabels: map[string]map[string]string{},
		Edges: map[Edge]*EdgeStats{}, Ignored: map[string]uint64{}, pods: map[podKey]int{}, unlabelled: map[string]bool{},
		listening: NewListening(), pending: map[pendingKey]*pendingFlow{}}
}

// Counts reports whether a flow is evidence of allowed traffic: forwarded
// or audited, and not known to be a reply (FlowOpener).
func Counts(f *schema.Flow) bool {
	return forwarded(f) && FlowOpener(f) != OpenedByDestination
}

func forwarded(f *schema.Flow) bool {
	return f.Verdict == schema.VerdictForwarded || f.Verdict == schema.VerdictAudit
}

// Add records a flow.
func (g *Graph) Add(f *schema.Flow) { g.AddGroup(f, 1, f.Time, f.Time) }

// AddGroup records n flows alike but for their times (and source ports),
// seen from first to last: what clickhouse.EachFlowGroup reads.
//
// Only the end that opened a connection learns from it (FlowOpener): a
// reply teaches nothing, and a flow whose opener no signal gives waits
// until Settle, which decides it by the ports each end was seen listening
// on, or counts it as "direction unknown".
func (g *Graph) AddGroup(f *schema.Flow, n uint64, first, last time.Time) {
	g.listening.Learn(f)
	if !forwarded(f) {
		g.Ignored[IgnoredNotForwarded] += n
		return
	}
	g.add(f, n, first, last, false)
}

// add records a forwarded (or, with dropped, a denied) flow group.
func (g *Graph) add(f *schema.Flow, n uint64, first, last time.Time, dropped bool) {
	o := FlowOpener(f)
	if o == OpenedByDestination {
		g.Ignored[IgnoredReply] += n
		return
	}
	e, why := EdgeOf(f)
	if why != "" {
		if dropped {
			if o == OpenedBySource {
				g.learn(&f.Src)
				g.learn(&f.Dst)
			}
			return
		}
		g.Ignored[why] += n
		return
	}
	if o == OpenedUnknown {
		k := pendingKey{edge: e, srcEnd: endKey(&f.Src, f.SrcIP), dstEnd: endKey(&f.Dst, f.DstIP), srcPort: f.SrcPort, dropped: dropped}
		p := g.pending[k]
		if p == nil {
			p = &pendingFlow{stats: EdgeStats{First: first, Last: last}, src: f.Src, dst: f.Dst}
			g.pending[k] = p
		}
		p.stats.add(n, first, last)
		return
	}
	g.learn(&f.Src)
	g.learn(&f.Dst)
	if dropped {
		addEdgeStats(g.deniedSink, e, n, first, last)
		return
	}
	g.AddEdge(e, n, first, last)
}

// Settle decides the flows whose opener was unknown when they came, now
// that every flow is in: a request becomes an edge, a reply and a flow
// still undecided teach nothing (counted in Ignored). Every reader of the
// graph in this package calls it first; calling it again is cheap.
func (g *Graph) Settle() {
	for k, p := range g.pending {
		src := g.listening.has(k.srcEnd, k.edge.Protocol, k.srcPort)
		dst := g.listening.has(k.dstEnd, k.edge.Protocol, k.edge.Port)
		switch {
		case src && !dst:
			g.Ignored[IgnoredReply] += p.stats.Flows
		case dst && !src:
			g.learn(&p.src)
			g.learn(&p.dst)
			if k.dropped {
				addEdgeStats(g.deniedSink, k.edge, p.stats.Flows, p.stats.First, p.stats.Last)
			} else {
				g.AddEdge(k.edge, p.stats.Flows, p.stats.First, p.stats.Last)
			}
		default:
			g.Ignored[IgnoredDirectionUnknown] += p.stats.Flows
		}
	}
	clear(g.pending)
}

// DirectionUnknown is the number of flows that taught nothing because no
// signal said which end opened their connection (after Settle).
func (g *Graph) DirectionUnknown() uint64 { return g.Ignored[IgnoredDirectionUnknown] }

// EdgeOf maps a flow to its edge; why says why it has none.
func EdgeOf(f *schema.Flow) (Edge, string) {
	switch f.Protocol {
	case "TCP", "UDP", "SCTP":
	default:
		return Edge{}, "protocol NetworkPolicy cannot express (" + f.Protocol + ")"
	}
	from, ok := peerOf(&f.Src, f.SrcIP, nil)
	if !ok {
		return Edge{}, "from the local node (always allowed)"
	}
	to, ok := peerOf(&f.Dst, f.DstIP, f.DstNames)
	if !ok {
		return Edge{}, "to the local node (always allowed)"
	}
	if from.Kind != PeerWorkload && to.Kind != PeerWorkload {
		return Edge{}, "neither end is a pod"
	}
	return Edge{From: from, To: to, Port: f.DstPort, Protocol: f.Protocol}, ""
}

// AddEdge records aggregated evidence for an edge (from the rollups).
func (g *Graph) AddEdge(e Edge, flows uint64, first, last time.Time) {
	addEdgeStats(g.Edges, e, flows, first, last)
}

// addEdgeStats adds flows seen from first to last to e's stats in m.
func addEdgeStats(m map[Edge]*EdgeStats, e Edge, flows uint64, first, last time.Time) {
	st := m[e]
	if st == nil {
		st = &EdgeStats{First: first, Last: last}
		m[e] = st
	}
	st.add(flows, first, last)
}

func (st *EdgeStats) add(flows uint64, first, last time.Time) {
	st.Flows += flows
	if first.Before(st.First) {
		st.First = first
	}
	if last.After(st.Last) {
		st.Last = last
	}
}

// learn records the identity of a pod endpoint and its namespace's labels.
// What it keeps must not depend on the order flows come in (files in time
// order, the store in groups): a workload's labels are those all its
// observations with known labels agree on, and so are a namespace's. A pod
// is looked at again only when its label set changes size, which keeps
// this cheap.
func (g *Graph) learn(e *schema.Endpoint) {
	pk := podKey{e.Namespace, e.Pod}
	if n, seen := g.pods[pk]; seen && n == len(e.Labels) && e.Pod != "" {
		return // the common case, first: this pod's label set is known
	}
	if !podLabelsKnown(e.Labels) {
		// Unknown (a minimal endpoint), or only Cilium's reserved labels:
		// Hubble names the pod but not its identity (reserved:world on some
		// flows of the samples). The workload exists, but learning its
		// labels from this would erase the real ones.
		if w, ok := WorkloadOf(e); ok {
			if _, seen := g.Workloads[w.Key()]; !seen {
				w.Labels = map[string]string{}
				g.Workloads[w.Key()] = &w
				g.unlabelled[w.Key()] = true
			}
		}
		return
	}
	if e.Pod != "" {
		g.pods[pk] = len(e.Labels)
	}
	w, ok := WorkloadOf(e)
	if !ok {
		return
	}
	key := w.Key()
	if old, seen := g.Workloads[key]; seen && !g.unlabelled[key] {
		for k, v := range old.Labels {
			if w.Labels[k] != v {
				// Pods of one workload differ on this label: not stable.
				delete(old.Labels, k)
			}
		}
	} else {
		g.Workloads[key] = &w
		delete(g.unlabelled, key)
	}
	if nl := NamespaceLabels(e.Labels); len(nl) > 0 {
		if old, seen := g.NamespaceLabels[e.Namespace]; seen {
			for k, v := range old {
				if nl[k] != v {
					delete(old, k)
				}
			}
		} else {
			g.NamespaceLabels[e.Namespace] = nl
		}
	}
}

// podLabelsKnown tells whether an endpoint's labels say something about its
// pod: any label but Cilium's reserved, CIDR and FQDN identities.
func podLabelsKnown(l map[string]string) bool {
	for k := range l {
		if !strings.HasPrefix(k, "reserved:") && !strings.HasPrefix(k, "cidr:") && !strings.HasPrefix(k, "fqdn:") {
			return true
		}
	}
	return false
}

// peerOf classifies an endpoint; false for the local node (reserved:host),
// whose traffic NetworkPolicy always allows.
func peerOf(e *schema.Endpoint, ip netip.Addr, names []string) (Peer, bool) {
	if isWorkload(e) {
		return Peer{Kind: PeerWorkload, Workload: e.Namespace + "/" + e.Workload}, true
	}
	if e.WorkloadKind == schema.KindReserved {
		switch {
		case e.Workload == schema.ReservedHost || e.Workload == "health":
			return Peer{}, false
		case strings.HasPrefix(e.Workload, schema.ReservedWorld):
		default: // remote-node, kube-apiserver, ingress...
			return Peer{Kind: PeerNode, Addr: ip.Unmap()}, true
		}
	}
	p := Peer{Kind: PeerExternal, Addr: ip.Unmap()}
	if len(names) > 0 {
		p.Name = names[0]
	}
	return p, true
}
