package enforcer

import (
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

// Summary is the one-line statement of the reduction.
func (b *BlastRadius) Summary() string {
	return fmt.Sprintf("blast radius %d → %d workload pairs reachable (%.1f%% reduction) over %d workloads",
		b.Before, b.After, b.ReductionPercent(), len(b.Rows))
}

// ComputeBlastRadius judges, with the evaluator, which workloads each
// observed workload may open a connection to on any port and protocol
// under the policies before (nil: none in force, every pod reaches every
// other) and after, and counts what each reaches by the transitive
// closure of that relation. Addresses outside the cluster are not counted.
func ComputeBlastRadius(before, after []networkingv1.NetworkPolicy, g *Graph) (*BlastRadius, error) {
	g.Settle()
	keys := sortedKeys(g.Workloads)
	b, err := reachCounts(before, g, keys)
	if err != nil {
		return nil, fmt.Errorf("blast radius of the policies in force: %w", err)
	}
	a, err := reachCounts(after, g, keys)
	if err != nil {
		return nil, fmt.Errorf("blast radius of the recommended policies: %w", err)
	}
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

// reachCounts returns, per workload (in keys order), the number of other
// workloads in the transitive closure of what the policies let it reach.
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
