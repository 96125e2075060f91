package enforcer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// blastCluster: four workloads, a/w1, a/w2, a/w3 and b/w4, seen talking
// w1 → w2 TCP/80, w2 → w3 TCP/5000, w4 → w1 TCP/443. In force: one policy
// that shuts all ingress into w3.
//
// By hand. In force, everyone reaches everyone but w3: w1, w2, w4 reach
// the two others that are not w3 (2 each); w3 reaches all three (3); sum
// 9. Recommended (only the observed edges): w1 → w2 → w3 and w4 → w1, so
// w1 reaches w2, w3 (2), w2 reaches w3 (1), w3 nothing (0), w4 reaches w1
// and through it w2 and w3 (3); sum 6. Reduction 1 − 6/9 = 33.3%.
func blastCluster() ([]schema.Flow, []networkingv1.NetworkPolicy, map[string][2]int) {
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	ep := func(ns, app string) schema.Endpoint {
		return schema.Endpoint{Namespace: ns, Pod: app + "-6b7f9c8d5d-k2x9z", Workload: app, WorkloadKind: "Deployment",
			Labels: map[string]string{"app": app, "io.kubernetes.pod.namespace": ns, "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": ns}}
	}
	flow := func(src, dst schema.Endpoint, port uint16) schema.Flow {
		return schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress, Protocol: "TCP",
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: port, Src: src, Dst: dst}
	}
	w1, w2, w3, w4 := ep("a", "w1"), ep("a", "w2"), ep("a", "w3"), ep("b", "w4")
	flows := []schema.Flow{flow(w1, w2, 80), flow(w2, w3, 5000), flow(w4, w1, 443)}
	inForce := []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "w3-closed"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "w3"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}}
	want := map[string][2]int{"a/w1": {2, 2}, "a/w2": {2, 1}, "a/w3": {3, 0}, "b/w4": {2, 3}}
	return flows, inForce, want
}

func TestBlastRadiusByHand(t *testing.T) {
	flows, inForce, want := blastCluster()
	b := NewReportBuilder()
	for i := range flows {
		b.Add(&flows[i])
	}
	r, err := b.Build(inForce, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		BlastRadius []struct {
			Workload             string
			Before, After, Total int
		} `json:"blast_radius"`
		Reduction float64 `json:"blast_radius_reduction_percent"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.BlastRadius) != len(want) {
		t.Fatalf("report.json blast_radius: %+v", doc.BlastRadius)
	}
	for _, row := range doc.BlastRadius {
		w, ok := want[row.Workload]
		if !ok || row.Before != w[0] || row.After != w[1] || row.Total != 3 {
			t.Errorf("%s: before %d after %d of %d, want %v of 3", row.Workload, row.Before, row.After, row.Total, w)
		}
	}
	if doc.Reduction < 33.3 || doc.Reduction > 33.4 {
		t.Errorf("reduction %.2f%%, want 33.3%%", doc.Reduction)
	}
	var md, page bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"report.md": md.String(), "report.html": page.String()} {
		if !strings.Contains(out, "33.3% reduction") {
			t.Errorf("%s does not state the reduction", name)
		}
	}
	// No policies in force: every workload reaches the three others.
	none, err := ComputeBlastRadius(nil, nil, b.Graph)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range none.Rows {
		if row.Before != 3 || row.After != 3 {
			t.Errorf("with no policies %s reaches %d/%d, want 3", row.Workload, row.Before, row.After)
		}
	}
	// The policy PR states the reduction its policies bring.
	_, res := generate(t, flows, DefaultConfig())
	res.BlastRadius, err = ComputeBlastRadius(inForce, res.Policies, b.Graph)
	if err != nil {
		t.Fatal(err)
	}
	if body := PRBody("t", res, &PRResult{}, nil); !strings.Contains(body, "33.3% reduction") {
		t.Errorf("PR body does not state the reduction:\n%s", body)
	}
}

// The blast radius over classes equals the pairwise closure: on the
// samples (policies in force → recommended, and none), the hand-made
// cluster, and a synthetic cluster with some policies dropped.
func TestBlastRadiusClassesMatchPairwise(t *testing.T) {
	type tcase struct {
		name          string
		g             *Graph
		before, after []networkingv1.NetworkPolicy
	}
	g, res := generate(t, sampleFlows(t), DefaultConfig())
	current, err := LoadDir("../testdata/netpol/current")
	if err != nil {
		t.Fatal(err)
	}
	flows, inForce, _ := blastCluster()
	hg, hres := generate(t, flows, DefaultConfig())
	sg := NewGraph()
	syntheticTraffic(120, 8, 40*120, sg.Add, nil)
	sres, err := Generate(sg, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var some []networkingv1.NetworkPolicy
	for i, np := range sres.Policies {
		if i%4 != 0 {
			some = append(some, np)
		}
	}
	for _, c := range []tcase{{"samples", g, current, res.Policies}, {"samples/none", g, nil, res.Policies},
		{"by hand", hg, inForce, hres.Policies}, {"synthetic", sg, some, sres.Policies}} {
		keys := sortedKeys(c.g.Workloads)
		got, err := reachCountsClasses(c.before, c.after, c.g)
		if err != nil {
			t.Fatal(err)
		}
		for s, set := range [][]networkingv1.NetworkPolicy{c.before, c.after} {
			want, err := reachCounts(set, c.g, keys)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got[s]) != fmt.Sprint(want) {
				t.Errorf("%s, set %d: classes %v, pairwise %v", c.name, s, got[s], want)
			}
		}
	}
}

func TestChangeWords(t *testing.T) {
	for pct, want := range map[float64]string{
		57.44: "57.4% reduction",
		-2.3:  "2.3% increase",
		0:     "no change",
		0.01:  "no change",
		-0.04: "no change",
	} {
		if got := ChangeWords(pct); got != want {
			t.Errorf("ChangeWords(%v) = %q, want %q", pct, got, want)
		}
	}
}
