package enforcer

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// BlastRadiusRow is one workload's blast radius: how many other workloads
// an attacker holding it reaches, directly or by pivoting through those it
// reaches, under the policies in force (Before) and the recommended ones
// (After), out of Total other workloads.
type BlastRadiusRow struct {
	Workload string `json:"workload"`
	Before   int    `json:"before"`
	After    int    `json:"after"`
	Total    int    `json:"total"`
}

// BlastRadius is the blast radius of every observed workload.
type BlastRadius struct {
	Rows []BlastRadiusRow
	// Before and After are the sums over the workloads.
	Before, After int
}

// ReductionPercent is how much the recommended policies cut the cluster's
// blast radius: 100 × (1 − after/before), 0 when nothing was reachable.
func (b *BlastRadius) ReductionPercent() float64 {
	if b == nil || b.Before == 0 {
		return 0
	}
	return 100 * (1 - float64(b.After)/float64(b.Before))
}

// ChangeWords states a change of the blast radius in % (ReductionPercent)
// in words: "57.4% reduction", "2.3% increase" (the recommendation reaches
// more than the policies in force, which may be tighter than the traffic
// needs), or "no change". Every report, page and PR body says it this way.
func ChangeWords(reductionPercent float64) string {
	switch {
	case reductionPercent >= 0.05:
		return fmt.Sprintf("%.1f%% reduction", reductionPercent)
	case reductionPercent <= -0.05:
		return fmt.Sprintf("%.1f%% increase", -reductionPercent)
	}
	return "no change"
}

// Summary is the one-line statement of the change.
func (b *BlastRadius) Summary() string {
	return fmt.Sprintf("blast radius %d → %d workload pairs reachable (%s) over %d workloads",
		b.Before, b.After, ChangeWords(b.ReductionPercent()), len(b.Rows))
}

// ComputeBlastRadius judges, with the evaluator, which workloads each
// observed workload may open a connection to on any port and protocol
// under the policies before (nil: none in force, every pod reaches every
// other) and after, and counts what each reaches by the transitive
// closure of that relation. Addresses outside the cluster are not counted.
func ComputeBlastRadius(before, after []networkingv1.NetworkPolicy, g *Graph) (*BlastRadius, error) {
	g.Settle()
	keys := sortedKeys(g.Workloads)
	counts, err := reachCountsClasses(before, after, g)
	if err != nil {
		return nil, fmt.Errorf("blast radius: %w", err)
	}
	b, a := counts[0], counts[1]
	out := &BlastRadius{}
	for i, k := range keys {
		out.Rows = append(out.Rows, BlastRadiusRow{Workload: k, Before: b[i], After: a[i], Total: len(keys) - 1})
		out.Before += b[i]
		out.After += a[i]
	}
	sort.SliceStable(out.Rows, func(i, j int) bool {
		return out.Rows[i].Before-out.Rows[i].After > out.Rows[j].Before-out.Rows[j].After
	})
	return out, nil
}

// reachCountsClasses is reachCounts for both sets at once, over the
// classes of the semantic diff (workloads every policy and rule treat
// alike reach alike): per class, the classes reachable through classes,
// then per workload the members of those, itself excepted.
func reachCountsClasses(before, after []networkingv1.NetworkPolicy, g *Graph) ([2][]int, error) {
	var out [2][]int
	var ports []diffPort
	for _, p := range probePorts(append(append([]networkingv1.NetworkPolicy(nil), before...), after...)) {
		ports = append(ports, diffPort{key: fmt.Sprintf("%s/%d", p.proto, p.port), proto: p.proto, n: p.port})
	}
	d, m, err := buildClasses(context.Background(), before, after, g, ports)
	if err != nil {
		return out, err
	}
	C, Q := len(d.members), len(d.pmembers)
	workloads := newBitset(C)
	for c := range C {
		if !d.addr[c] {
			workloads.set(c)
		}
	}
	al, ing := newBitset(C), newBitset(C)
	for s := range m.sets {
		// Direct reach between workload classes on any port; a class
		// reaches itself only through another member.
		direct := make([]bitset, C)
		for a := range C {
			if d.addr[a] {
				continue
			}
			direct[a] = newBitset(C)
			for q := range Q {
				m.allowed(s, a, q, al, ing)
				direct[a].or(al)
			}
			direct[a].and(workloads)
			if len(d.members[a]) < 2 && direct[a].has(a) {
				direct[a][a/64] &^= 1 << (a % 64)
			}
		}
		reach := closureCounts(direct, d.members)
		for i, p := range d.peers {
			if p.Kind == PeerWorkload {
				out[s] = append(out[s], reach[d.class[i]])
			}
		}
	}
	return out, nil
}

// closureCounts returns, per class, how many peers a member of it reaches
// through the direct relation (nil rows: not part of the graph), itself
// excepted. The strongly connected components are found (Tarjan's
// algorithm, without recursion) and, as they come out children first,
// each gets the set of classes it reaches, so the cost follows the edges
// rather than the square of the classes.
func closureCounts(direct []bitset, members [][]int) []int {
	C := len(direct)
	adj := make([][]int, C)
	for a, row := range direct {
		if row != nil {
			row.each(func(c int) { adj[a] = append(adj[a], c) })
		}
	}
	index, low, comp := make([]int, C), make([]int, C), make([]int, C)
	for i := range index {
		index[i], comp[i] = -1, -1
	}
	onStack := make([]bool, C)
	var stack []int
	type frame struct{ v, next int }
	var calls []frame
	var closure []bitset // per component: its classes and all they reach
	counter := 0
	reach := make([]int, C)
	for root := range C {
		if direct[root] == nil || index[root] >= 0 {
			continue
		}
		calls = append(calls[:0], frame{root, 0})
		index[root], low[root] = counter, counter
		counter++
		stack = append(stack, root)
		onStack[root] = true
		for len(calls) > 0 {
			f := &calls[len(calls)-1]
			v := f.v
			if f.next < len(adj[v]) {
				w := adj[v][f.next]
				f.next++
				switch {
				case index[w] < 0:
					index[w], low[w] = counter, counter
					counter++
					stack = append(stack, w)
					onStack[w] = true
					calls = append(calls, frame{w, 0})
				case onStack[w]:
					low[v] = min(low[v], index[w])
				}
				continue
			}
			calls = calls[:len(calls)-1]
			if len(calls) > 0 {
				u := calls[len(calls)-1].v
				low[u] = min(low[u], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			// v roots a component: pop it.
			id := len(closure)
			set := newBitset(C)
			var comps []int
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp[w] = id
				set.set(w)
				comps = append(comps, w)
				if w == v {
					break
				}
			}
			isCyclic := len(comps) > 1
			for _, w := range comps {
				for _, x := range adj[w] {
					if comp[x] == id {
						isCyclic = isCyclic || x == w
						continue
					}
					set.or(closure[comp[x]])
				}
			}
			closure = append(closure, set)
			// Reached from a member: the component itself only when it
			// has a cycle, and everything it leads to.
			n := 0
			set.each(func(c int) { n += len(members[c]) })
			for _, w := range comps {
				r := n
				if !isCyclic {
					r -= len(members[w]) // the members of its own class are not reached
				} else {
					r-- // itself
				}
				reach[w] = r
			}
		}
	}
	return reach
}

// reachCounts returns, per workload (in keys order), the number of other
// workloads in the transitive closure of what the policies let it reach,
// pair by pair: the oracle reachCountsClasses is tested against.
func reachCounts(policies []networkingv1.NetworkPolicy, g *Graph, keys []string) ([]int, error) {
	ev, err := NewEvaluator(policies, func(ns string) map[string]string { return g.NamespaceLabels[ns] })
	if err != nil {
		return nil, err
	}
	probes := probePorts(policies)
	eps := make([]Endpoint, len(keys))
	for i, k := range keys {
		eps[i] = g.endpoint(Peer{Kind: PeerWorkload, Workload: k})
	}
	direct := make([][]int, len(keys))
	for i := range keys {
		for j := range keys {
			if i == j {
				continue
			}
			for _, p := range probes {
				if ev.Allows(Connection{Src: eps[i], Dst: eps[j], Port: p.port, Protocol: p.proto}) {
					direct[i] = append(direct[i], j)
					break
				}
			}
		}
	}
	out := make([]int, len(keys))
	seen := make([]int, len(keys)) // generation marks: seen[j] == i+1
	var queue []int
	for i := range keys {
		queue = append(queue[:0], i)
		seen[i] = i + 1
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			for _, j := range direct[n] {
				if seen[j] != i+1 {
					seen[j] = i + 1
					out[i]++
					queue = append(queue, j)
				}
			}
		}
	}
	return out, nil
}

type probe struct {
	proto corev1.Protocol
	port  int32
}

// probePorts are the ports that tell whether a pair may connect on any
// port: every port and range start a rule names, and per protocol one port
// no rule names (what a rule without ports allows).
func probePorts(policies []networkingv1.NetworkPolicy) []probe {
	named := map[probe]bool{}
	add := func(ps []networkingv1.NetworkPolicyPort) {
		for _, p := range ps {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if p.Port != nil && p.Port.Type == 0 {
				named[probe{proto, p.Port.IntVal}] = true
			}
		}
	}
	for _, np := range policies {
		for _, r := range np.Spec.Ingress {
			add(r.Ports)
		}
		for _, r := range np.Spec.Egress {
			add(r.Ports)
		}
	}
	var out []probe
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
		// The highest port no rule names.
		free := int32(65535)
		for named[probe{proto, free}] {
			free--
		}
		out = append(out, probe{proto, free})
	}
	for p := range named {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].proto != out[j].proto {
			return out[i].proto < out[j].proto
		}
		return out[i].port < out[j].port
	})
	return out
}
