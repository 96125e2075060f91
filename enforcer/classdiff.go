package enforcer

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// bitset is a set of small integers.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) or(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}
func (b bitset) and(o bitset) {
	for i := range b {
		b[i] &= o[i]
	}
}
func (b bitset) copyFrom(o bitset) { copy(b, o) }
func (b bitset) clear()            { clear(b) }
func (b bitset) each(fn func(i int)) {
	for wi, w := range b {
		for w != 0 {
			t := bits.TrailingZeros64(w)
			fn(wi*64 + t)
			w &= w - 1
		}
	}
}

// ClassDiff is the semantic diff of two policy sets computed over
// equivalence classes: peers that every policy selects alike and every
// rule's peers match alike are one class, ports that every rule allows
// alike are one port class. Whether access changes is judged once per
// (source class, port class, destination class), not per pair of peers,
// so its cost grows with the number of distinct classes, not the square of
// the workloads. Changes expands it to the pairs the pairwise diff lists.
type ClassDiff struct {
	peers    []Peer
	names    []string
	keys     []Peer
	class    []int   // peer → class
	members  [][]int // class → peers, in peer order
	addr     []bool  // class of addresses (not workloads)
	ports    []diffPort
	pclass   []int // port → port class
	pmembers [][]int
	// loss[a*P+q] and gain[a*P+q]: destination classes that lose or gain
	// access from source class a on port class q.
	loss, gain []bitset
	observed   map[pairPort]uint64
}

type diffPort struct {
	key   string
	proto corev1.Protocol
	n     int32
}

type pairPort struct {
	from, to Peer
	port     string
}

// diffKey is the observed-flow key of a peer: an address counts whatever
// kind it was recorded with and whatever DNS name it was reached by.
func diffKey(p Peer) Peer {
	if p.Kind == PeerWorkload {
		return Peer{Workload: p.Workload}
	}
	return Peer{Kind: PeerExternal, Addr: p.Addr}
}

// diffPeers are the peers the diff is about: the workloads in name order,
// then each address once in address order (an address recorded as a node
// on one edge and as external on another keeps the lower kind, whatever
// the map's order); and the ports: every port the traffic or either
// policy set names, in text order.
func diffPeers(before, after []networkingv1.NetworkPolicy, g *Graph) ([]Peer, []diffPort, map[pairPort]uint64, error) {
	ports := map[string]bool{}
	for e := range g.Edges {
		ports[fmt.Sprintf("%s/%d", e.Protocol, e.Port)] = true
	}
	for _, set := range [][]networkingv1.NetworkPolicy{before, after} {
		for _, np := range set {
			for _, r := range np.Spec.Ingress {
				addPorts(ports, r.Ports)
			}
			for _, r := range np.Spec.Egress {
				addPorts(ports, r.Ports)
			}
		}
	}
	var peers []Peer
	for _, k := range sortedKeys(g.Workloads) {
		peers = append(peers, Peer{Kind: PeerWorkload, Workload: k})
	}
	var addrs []Peer
	for e := range g.Edges {
		for _, p := range []Peer{e.From, e.To} {
			if p.Kind != PeerWorkload {
				addrs = append(addrs, Peer{Kind: p.Kind, Addr: p.Addr})
			}
		}
	}
	slices.SortFunc(addrs, func(a, b Peer) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
	addrs = slices.CompactFunc(addrs, func(a, b Peer) bool { return a.Addr == b.Addr })
	peers = append(peers, addrs...)
	observed := map[pairPort]uint64{}
	for e, st := range g.Edges {
		observed[pairPort{diffKey(e.From), diffKey(e.To), fmt.Sprintf("%s/%d", e.Protocol, e.Port)}] += st.Flows
	}
	var portList []diffPort
	for _, pk := range sortedKeys(ports) {
		proto, port, _ := strings.Cut(pk, "/")
		n, err := strconv.ParseInt(port, 10, 32)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("port %q: %w", pk, err)
		}
		portList = append(portList, diffPort{pk, corev1.Protocol(proto), int32(n)})
	}
	return peers, portList, observed, nil
}

// classRule is one rule of one policy, over classes.
type classRule struct {
	policy int    // index in the set's policies
	peers  bitset // source (ingress) or destination (egress) classes it matches
	ports  bitset // port classes it allows
}

// SemanticDiffClasses computes the semantic diff of before and after over
// equivalence classes (see ClassDiff). It stops with ctx's error when ctx
// ends.
func SemanticDiffClasses(ctx context.Context, before, after []networkingv1.NetworkPolicy, g *Graph) (*ClassDiff, error) {
	d, m, err := buildClasses(ctx, before, after, g, nil)
	if err != nil {
		return nil, err
	}
	C, Q := len(d.members), len(d.pmembers)
	// The access from each source class on each port class, both sets.
	d.loss = make([]bitset, C*Q)
	d.gain = make([]bitset, C*Q)
	var allowed [2]bitset
	allowed[0], allowed[1] = newBitset(C), newBitset(C)
	ing := newBitset(C)
	for a := range C {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("semantic diff of %d peers in %d classes stopped: %w", len(d.peers), C, ctx.Err())
		}
		for q := range Q {
			for s := range m.sets {
				m.allowed(s, a, q, allowed[s], ing)
			}
			var loss, gain bitset
			for w := range allowed[0] {
				b, af := allowed[0][w], allowed[1][w]
				if l := b &^ af; l != 0 {
					if loss == nil {
						loss = newBitset(C)
					}
					loss[w] = l
				}
				if gn := af &^ b; gn != 0 {
					if gain == nil {
						gain = newBitset(C)
					}
					gain[w] = gn
				}
			}
			d.loss[a*Q+q], d.gain[a*Q+q] = loss, gain
		}
	}
	return d, nil
}

// classSet is one policy set over classes: the rules, who is isolated,
// and the index of rules by the class they are about.
type classSet struct {
	sel           []bitset // policy → classes it selects
	egByClass     [][]int  // class → egress rules of the policies selecting it
	egIsolated    []bool
	inByPeerClass [][]int // class → ingress rules whose peers match it
	notInIsolated bitset
	rules         []classRule
}

// classModel is both policy sets over the classes of a ClassDiff.
type classModel struct {
	sets [2]classSet
	all  bitset
	addr []bool
}

// allowed sets al to the destination classes source class a may reach on
// port class q under set s (ing is scratch space).
func (m *classModel) allowed(s, a, q int, al, ing bitset) {
	x := &m.sets[s]
	if x.egIsolated[a] && !m.addr[a] {
		al.clear()
		for _, k := range x.egByClass[a] {
			if r := &x.rules[k]; r.ports.has(q) {
				al.or(r.peers)
			}
		}
	} else {
		al.copyFrom(m.all)
	}
	ing.copyFrom(x.notInIsolated)
	for _, k := range x.inByPeerClass[a] {
		if r := &x.rules[k]; r.ports.has(q) {
			ing.or(x.sel[r.policy])
		}
	}
	al.and(ing)
}

// buildClasses groups the peers and ports (portList, or those diffPeers
// finds when nil) into classes and compiles both sets over them.
func buildClasses(ctx context.Context, before, after []networkingv1.NetworkPolicy, g *Graph, ports []diffPort) (*ClassDiff, *classModel, error) {
	g.Settle()
	nsl := func(ns string) map[string]string { return g.NamespaceLabels[ns] }
	evs := [2]*Evaluator{}
	for s, set := range [][]networkingv1.NetworkPolicy{before, after} {
		ev, err := NewEvaluator(set, nsl)
		if err != nil {
			return nil, nil, err
		}
		evs[s] = ev
	}
	peers, portList, observed, err := diffPeers(before, after, g)
	if err != nil {
		return nil, nil, err
	}
	if ports != nil {
		portList = ports
	}
	d := &ClassDiff{peers: peers, ports: portList, observed: observed}
	endpoints := make([]Endpoint, len(peers))
	d.names = make([]string, len(peers))
	d.keys = make([]Peer, len(peers))
	byNS := map[string][]int{}
	var addrIdx []int
	for i, p := range peers {
		endpoints[i], d.names[i], d.keys[i] = g.endpoint(p), p.String(), diffKey(p)
		if p.Kind == PeerWorkload {
			byNS[endpoints[i].Pod.Namespace] = append(byNS[endpoints[i].Pod.Namespace], i)
		} else {
			addrIdx = append(addrIdx, i)
		}
	}
	namespaces := sortedKeys(byNS)

	// Predicates: which peers each policy selects, which each rule peer
	// matches. A peer's signature is the list of predicates it satisfies.
	sig := make([][]int32, len(peers))
	npred := int32(0)
	pred := func(match []int) int32 {
		id := npred
		npred++
		for _, i := range match {
			sig[i] = append(sig[i], id)
		}
		return id
	}
	type rulePreds struct {
		set, policy int
		egress      bool
		r           *compiledRule
		preds       []int32 // nil: any peer
	}
	var rules []rulePreds
	selPred := [2][]int32{}
	for s, ev := range evs {
		for pi := range ev.policies {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			p := &ev.policies[pi]
			var match []int
			for _, i := range byNS[p.np.Namespace] {
				if p.selector.Matches(labels.Set(endpoints[i].Pod.Labels)) {
					match = append(match, i)
				}
			}
			selPred[s] = append(selPred[s], pred(match))
			for dir, rs := range [][]compiledRule{p.inRules, p.egRules} {
				for ri := range rs {
					r := &rs[ri]
					rp := rulePreds{set: s, policy: pi, egress: dir == 1, r: r}
					for _, cp := range r.peers {
						var match []int
						switch {
						case cp.block != nil:
							for _, i := range addrIdx {
								if ev.peerMatches(cp, p.np.Namespace, endpoints[i]) {
									match = append(match, i)
								}
							}
						case cp.namespaces == nil:
							for _, i := range byNS[p.np.Namespace] {
								if ev.peerMatches(cp, p.np.Namespace, endpoints[i]) {
									match = append(match, i)
								}
							}
						default:
							for _, ns := range namespaces {
								if !cp.namespaces.Matches(labels.Set(ev.namespaceLabels(ns))) {
									continue
								}
								for _, i := range byNS[ns] {
									if cp.pods == nil || cp.pods.Matches(labels.Set(endpoints[i].Pod.Labels)) {
										match = append(match, i)
									}
								}
							}
						}
						rp.preds = append(rp.preds, pred(match))
					}
					if rp.preds == nil && len(r.peers) > 0 {
						rp.preds = []int32{}
					}
					rules = append(rules, rp)
				}
			}
		}
	}
	// Classes: peers of the same kind with the same signature.
	classOf := map[string]int{}
	d.class = make([]int, len(peers))
	var kb strings.Builder
	for i := range peers {
		kb.Reset()
		if peers[i].Kind == PeerWorkload {
			kb.WriteByte('w')
		} else {
			kb.WriteByte('a')
		}
		for _, id := range sig[i] {
			kb.WriteString(strconv.Itoa(int(id)))
			kb.WriteByte(',')
		}
		c, ok := classOf[kb.String()]
		if !ok {
			c = len(d.members)
			classOf[kb.String()] = c
			d.members = append(d.members, nil)
			d.addr = append(d.addr, peers[i].Kind != PeerWorkload)
		}
		d.class[i] = c
		d.members[c] = append(d.members[c], i)
	}
	C := len(d.members)
	// The predicates over classes.
	predClasses := make([]bitset, npred)
	for i := range predClasses {
		predClasses[i] = newBitset(C)
	}
	for i := range peers {
		for _, id := range sig[i] {
			predClasses[id].set(d.class[i])
		}
	}
	all := newBitset(C)
	for c := range C {
		all.set(c)
	}
	// Port classes: ports every rule allows alike.
	ruleAllowsPort := make([][]bool, len(rules))
	pclassOf := map[string]int{}
	d.pclass = make([]int, len(portList))
	for ri := range rules {
		ruleAllowsPort[ri] = make([]bool, len(portList))
		for pi, pt := range portList {
			ruleAllowsPort[ri][pi] = portsAllow(rules[ri].r.ports, Connection{Port: pt.n, Protocol: pt.proto})
		}
	}
	for pi := range portList {
		kb.Reset()
		kb.WriteString(string(portList[pi].proto))
		for ri := range rules {
			if ruleAllowsPort[ri][pi] {
				kb.WriteString("," + strconv.Itoa(ri))
			}
		}
		q, ok := pclassOf[kb.String()]
		if !ok {
			q = len(d.pmembers)
			pclassOf[kb.String()] = q
			d.pmembers = append(d.pmembers, nil)
		}
		d.pclass[pi] = q
		d.pmembers[q] = append(d.pmembers[q], pi)
	}
	Q := len(d.pmembers)
	// Per set: the rules over classes, who is isolated, and the index of
	// rules by the class they are about.
	m := &classModel{all: all, addr: d.addr}
	sd := &m.sets
	for s, ev := range evs {
		x := &sd[s]
		x.sel = make([]bitset, len(ev.policies))
		x.egByClass = make([][]int, C)
		x.egIsolated = make([]bool, C)
		x.inByPeerClass = make([][]int, C)
		x.notInIsolated = newBitset(C)
		x.notInIsolated.copyFrom(all)
		for pi := range ev.policies {
			x.sel[pi] = predClasses[selPred[s][pi]]
			p := &ev.policies[pi]
			x.sel[pi].each(func(c int) {
				if p.egress {
					x.egIsolated[c] = true
				}
				if p.ingress {
					x.notInIsolated[c/64] &^= 1 << (c % 64)
				}
			})
		}
		for ri := range rules {
			rp := &rules[ri]
			if rp.set != s {
				continue
			}
			cr := classRule{policy: rp.policy, ports: newBitset(Q)}
			if rp.preds == nil {
				cr.peers = all
			} else {
				cr.peers = newBitset(C)
				for _, id := range rp.preds {
					cr.peers.or(predClasses[id])
				}
			}
			for pi := range portList {
				if ruleAllowsPort[ri][pi] {
					cr.ports.set(d.pclass[pi])
				}
			}
			k := len(x.rules)
			x.rules = append(x.rules, cr)
			p := &ev.policies[rp.policy]
			if rp.egress {
				if p.egress {
					x.sel[rp.policy].each(func(c int) { x.egByClass[c] = append(x.egByClass[c], k) })
				}
			} else if p.ingress {
				cr.peers.each(func(c int) { x.inByPeerClass[c] = append(x.inByPeerClass[c], k) })
			}
		}
	}
	return d, m, nil
}

// Classes is the number of peer classes and port classes.
func (d *ClassDiff) Classes() (peers, ports int) { return len(d.members), len(d.pmembers) }

// Changes expands the diff to one Change per pair of peers and port, in
// the order of the pairwise diff: by source peer, destination peer, port.
// On a large cluster that is a very long list: prefer Summarize.
func (d *ClassDiff) Changes() []Change {
	var out []Change
	Q := len(d.pmembers)
	for i := range d.peers {
		a := d.class[i]
		for j := range d.peers {
			if d.addr[a] && d.addr[d.class[j]] || i == j {
				continue
			}
			c := d.class[j]
			for pi, pt := range d.ports {
				q := d.pclass[pi]
				var gains bool
				switch {
				case d.loss[a*Q+q] != nil && d.loss[a*Q+q].has(c):
				case d.gain[a*Q+q] != nil && d.gain[a*Q+q].has(c):
					gains = true
				default:
					continue
				}
				out = append(out, Change{From: d.names[i], To: d.names[j], Port: pt.key, Gains: gains,
					Observed: d.observed[pairPort{d.keys[i], d.keys[j], pt.key}]})
			}
		}
	}
	return out
}

// DiffSummary is the semantic diff as a security team reads it: the
// changes to observed traffic one by one, the rest as counts.
type DiffSummary struct {
	// Losses and Gains count the pairs of peers and ports that lose or
	// gain access.
	Losses, Gains int
	// Observed are the changes to observed traffic, most flows first.
	Observed []Change
	// UnobservedLosses counts, per namespace, the pairs/ports nobody was
	// seen using that lose access (the namespace of the destination
	// workload, else of the source).
	UnobservedLosses map[string]int
}

// Summarize counts the changes without listing them.
func (d *ClassDiff) Summarize() DiffSummary {
	sum := DiffSummary{UnobservedLosses: map[string]int{}}
	C, Q := len(d.members), len(d.pmembers)
	size := make([]int, C)
	for c, ms := range d.members {
		size[c] = len(ms)
	}
	// Losses are attributed to the destination's namespace (dst[c]: the
	// pairs/ports towards each member of class c, self-pairs taken off by
	// self[c]) or, towards addresses, to the source's (src[a]).
	dst, self, src := make([]int, C), make([]int, C), make([]int, C)
	for a := range C {
		na := size[a]
		for q := range Q {
			nports := len(d.pmembers[q])
			for k, bs := range []bitset{d.loss[a*Q+q], d.gain[a*Q+q]} {
				if bs == nil {
					continue
				}
				pairs := 0
				for wi, w := range bs {
					for w != 0 {
						c := wi*64 + bits.TrailingZeros64(w)
						w &= w - 1
						if d.addr[c] {
							if d.addr[a] {
								continue
							}
							if k == 0 {
								src[a] += size[c] * nports
							}
							pairs += na * size[c]
							continue
						}
						pairs += na * size[c]
						if a == c {
							pairs -= na
						}
						if k == 0 {
							dst[c] += na * nports
							if a == c {
								self[c] += nports
							}
						}
					}
				}
				if k == 0 {
					sum.Losses += pairs * nports
				} else {
					sum.Gains += pairs * nports
				}
			}
		}
	}
	for c, ms := range d.members {
		if dst[c] == 0 && src[c] == 0 {
			continue
		}
		for _, i := range ms {
			if dst[c] > 0 {
				sum.UnobservedLosses[d.namespaceOf(i)] += dst[c] - self[c]
			}
			if src[c] > 0 {
				sum.UnobservedLosses[d.namespaceOf(i)] += src[c]
			}
		}
	}
	// Observed changes: only observed pairs/ports can carry flows.
	index := map[Peer]int{}
	for i, k := range d.keys {
		index[k] = i
	}
	portIdx := map[string]int{}
	for pi, pt := range d.ports {
		portIdx[pt.key] = pi
	}
	for k, flows := range d.observed {
		i, ok1 := index[k.from]
		j, ok2 := index[k.to]
		pi, ok3 := portIdx[k.port]
		if !ok1 || !ok2 || !ok3 || i == j {
			continue
		}
		a, c, q := d.class[i], d.class[j], d.pclass[pi]
		var gains bool
		switch {
		case d.loss[a*Q+q] != nil && d.loss[a*Q+q].has(c):
			ns := d.namespaceOf(j)
			if d.addr[c] {
				ns = d.namespaceOf(i)
			}
			sum.UnobservedLosses[ns]--
			if sum.UnobservedLosses[ns] == 0 {
				delete(sum.UnobservedLosses, ns)
			}
		case d.gain[a*Q+q] != nil && d.gain[a*Q+q].has(c):
			gains = true
		default:
			continue
		}
		sum.Observed = append(sum.Observed, Change{From: d.names[i], To: d.names[j], Port: k.port, Gains: gains, Observed: flows})
	}
	slices.SortFunc(sum.Observed, func(x, y Change) int {
		if x.Observed != y.Observed {
			if x.Observed > y.Observed {
				return -1
			}
			return 1
		}
		return strings.Compare(x.From+" "+x.To+" "+x.Port, y.From+" "+y.To+" "+y.Port)
	})
	for ns, n := range sum.UnobservedLosses {
		if n == 0 {
			delete(sum.UnobservedLosses, ns)
		}
	}
	return sum
}

func (d *ClassDiff) namespaceOf(i int) string {
	if d.peers[i].Kind != PeerWorkload {
		return ""
	}
	ns, _, _ := strings.Cut(d.peers[i].Workload, "/")
	return ns
}
