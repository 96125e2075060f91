package enforcer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// holdBackCluster is an hour of a small cluster with four incidents:
// shop/api exfiltrates to an address next to the outside API it always
// uses (same /24, so aggregation would cover it), shop/cart scans the
// cluster and reaches two pods and an unused address, shop/web beacons to
// an outside address and tunnels through DNS (and then connects to an
// address named under the tunnel's domain). Each has its finding.
func holdBackCluster() ([]schema.Flow, []schema.Finding) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	ep := func(ns, app string) schema.Endpoint {
		return schema.Endpoint{Namespace: ns, Pod: app + "-6b7f9c8d5d-k2x9z", Workload: app, WorkloadKind: "Deployment",
			Labels: map[string]string{"app": app, "io.kubernetes.pod.namespace": ns, "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": ns}}
	}
	world := schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}
	api, db, cart, web, dns := ep("shop", "api"), ep("shop", "db"), ep("shop", "cart"), ep("shop", "web"), ep("kube-system", "coredns")
	dns.Labels["k8s-app"] = "kube-dns"
	var flows []schema.Flow
	add := func(at time.Time, src, dst schema.Endpoint, dstIP string, port uint16, proto string, names ...string) {
		flows = append(flows, schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress,
			Protocol: proto, SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr(dstIP), SrcPort: 40000, DstPort: port,
			Src: src, Dst: dst, DstNames: names})
	}
	for m := range 60 {
		at := t0.Add(time.Duration(m) * time.Minute)
		add(at, api, db, "10.0.1.5", 5432, "TCP")
		add(at, cart, db, "10.0.1.5", 5432, "TCP")
		add(at, web, api, "10.0.1.6", 8080, "TCP")
		add(at, api, world, "198.51.100.10", 443, "TCP")                   // the API it always calls
		add(at.Add(time.Second), api, world, "198.51.100.200", 443, "TCP") // and its second address
		add(at, web, dns, "10.0.9.53", 53, "UDP")
		add(at, web, world, "192.0.2.50", 443, "TCP", "cdn.example.com.")
		if m >= 10 && m%3 == 0 {
			add(at, web, world, "203.0.113.5", 8443, "TCP") // the beacon
		}
	}
	// The exfiltration: 09:30 to 09:31, 3,000 connections.
	for i := range 3000 {
		add(t0.Add(30*time.Minute+time.Duration(i)*20*time.Millisecond), api, world, "198.51.100.77", 443, "TCP")
	}
	// The scan, 09:40: two pods it never talked to, and an unused address.
	scan := t0.Add(40 * time.Minute)
	add(scan, cart, api, "10.0.1.6", 8080, "TCP")
	add(scan, cart, web, "10.0.1.7", 22, "TCP")
	add(scan, cart, world, "10.0.3.99", 6379, "TCP")
	// After the DNS tunnel, web reaches the tunnel's own host.
	add(t0.Add(50*time.Minute), web, world, "192.0.2.9", 443, "TCP", "c2.exfil-tunnel.net.")
	findings := []schema.Finding{
		{ID: "f1", Detector: "egress-spike", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "api",
			Start: t0.Add(30 * time.Minute), End: t0.Add(31 * time.Minute), Status: schema.FindingResolved,
			Evidence: schema.Evidence{Window: time.Minute, Flows: 3002, Metric: "flows", Observed: 3002, Baseline: 2, Threshold: 120}},
		{ID: "f2", Detector: "lateral-scan", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "cart",
			Start: t0.Add(40 * time.Minute), End: t0.Add(41 * time.Minute), Status: schema.FindingResolved,
			Evidence: schema.Evidence{Window: time.Minute, Flows: 4}},
		{ID: "f3", Detector: "beacon", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "web", Peer: "203.0.113.5",
			Start: t0.Add(10 * time.Minute), End: t0.Add(58 * time.Minute), Status: schema.FindingOpen, Evidence: schema.Evidence{Window: 3 * time.Minute, Flows: 17}},
		{ID: "f4", Detector: "dns-tunnel", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "web", Peer: "exfil-tunnel.net",
			Start: t0.Add(45 * time.Minute), End: t0.Add(50 * time.Minute), Status: schema.FindingResolved, Evidence: schema.Evidence{Window: 15 * time.Minute}},
		// Findings that hold nothing back.
		{ID: "f5", Detector: "plaintext-in-mesh", Severity: schema.SeverityWarning, Namespace: "shop", Workload: "db",
			Start: t0, End: t0.Add(time.Hour)},
		{ID: "f6", Detector: "denial-rate", Severity: schema.SeverityWarning, Namespace: "shop", Start: t0, End: t0.Add(time.Hour)},
	}
	return flows, findings
}

// judge tells whether the policies of res allow from → to on port, by the
// project's evaluator.
func judge(t *testing.T, g *Graph, res *Result, from, to Peer, proto string, port uint16) bool {
	t.Helper()
	ev, err := NewEvaluator(res.Policies, func(ns string) map[string]string { return g.NamespaceLabels[ns] })
	if err != nil {
		t.Fatal(err)
	}
	return ev.Evaluate(Connection{Src: g.endpoint(from), Dst: g.endpoint(to), Port: int32(port), Protocol: corev1.Protocol(proto)}).Allowed
}

func TestRecommendHoldsBackFlaggedEdges(t *testing.T) {
	flows, findings := holdBackCluster()
	wl := func(w string) Peer { return Peer{Kind: PeerWorkload, Workload: w} }
	addr := func(a string) Peer { return Peer{Kind: PeerExternal, Addr: netip.MustParseAddr(a)} }
	type conn struct {
		from, to Peer
		proto    string
		port     uint16
	}
	attack := map[string]conn{
		"exfiltration":         {wl("shop/api"), addr("198.51.100.77"), "TCP", 443},
		"scan reaching a pod":  {wl("shop/cart"), wl("shop/api"), "TCP", 8080},
		"scan reaching ssh":    {wl("shop/cart"), wl("shop/web"), "TCP", 22},
		"scan, unused address": {wl("shop/cart"), addr("10.0.3.99"), "TCP", 6379},
		"beacon":               {wl("shop/web"), addr("203.0.113.5"), "TCP", 8443},
		"tunnel's host":        {wl("shop/web"), addr("192.0.2.9"), "TCP", 443},
	}
	ordinary := map[string]conn{
		"api's database":          {wl("shop/api"), wl("shop/db"), "TCP", 5432},
		"api's outside API":       {wl("shop/api"), addr("198.51.100.10"), "TCP", 443},
		"its second address":      {wl("shop/api"), addr("198.51.100.200"), "TCP", 443},
		"cart's database":         {wl("shop/cart"), wl("shop/db"), "TCP", 5432},
		"web to api (not a scan)": {wl("shop/web"), wl("shop/api"), "TCP", 8080},
		"web's DNS":               {wl("shop/web"), wl("kube-system/coredns"), "UDP", 53},
	}

	cfg := DefaultConfig()
	cfg.Flagged = findings
	// The exfiltration's address shares a /24 with the API: aggregated
	// into one block, which must except it.
	cfg.MaxPrefixV4 = 24
	g, res := generate(t, flows, cfg)
	if v, err := Prove(g, res); err != nil || len(v) != 0 {
		t.Fatalf("proof: %v %+v", err, v)
	}
	for name, c := range attack {
		if judge(t, g, res, c.from, c.to, c.proto, c.port) {
			t.Errorf("%s (%s → %s %s/%d) is allowed by the recommendation", name, c.from, c.to, c.proto, c.port)
		}
	}
	for name, c := range ordinary {
		if !judge(t, g, res, c.from, c.to, c.proto, c.port) {
			t.Errorf("%s (%s → %s %s/%d) is denied by the recommendation", name, c.from, c.to, c.proto, c.port)
		}
	}
	held := map[string]Skipped{}
	for _, s := range res.HeldBack() {
		held[EdgeKey(s.Edge)] = s
	}
	if len(held) != len(attack) {
		t.Errorf("%d edges held back, want %d: %v", len(held), len(attack), held)
	}
	ex := held["shop/api → 198.51.100.77 TCP/443"]
	if len(ex.Flags) != 1 || ex.Flags[0].Detector != "egress-spike" || ex.Flags[0].Severity != schema.SeverityCritical ||
		ex.Flags[0].Subject != "shop/api" || ex.Stats.Flows != 3000 {
		t.Errorf("exfiltration held back as %+v", ex)
	}
	if want := "held back: evidence of critical egress-spike on shop/api (3002 flows, 2026-03-02T09:30:00Z to 09:31:00Z)"; ex.Reason != want {
		t.Errorf("reason %q, want %q", ex.Reason, want)
	}
	if s := held["shop/web → 203.0.113.5 TCP/8443"]; len(s.Flags) != 1 || s.Flags[0].Detector != "beacon" {
		t.Errorf("beacon held back as %+v", s)
	}
	// The aggregated block of api's outside API excepts the exfiltration.
	y := render(t, res)
	if !strings.Contains(y, "cidr: 198.51.100.0/24\n        except:\n        - 198.51.100.77/32") {
		t.Errorf("no except for the held-back address in:\n%s", y)
	}

	// The pull request body lists each held-back edge with its finding,
	// and not again under Left out.
	body := PRBody("policies", res, &PRResult{}, nil)
	for _, want := range []string{"### Held back: evidence of an attack", "6 observed edges are **not allowed**",
		"| shop/api → 198.51.100.77 TCP/443 | 3000 | egress-spike | critical | shop/api | 3002 | 2026-03-02T09:30:00Z to 2026-03-02T09:31:00Z | `f1` |",
		"| shop/web → 203.0.113.5 TCP/8443 | 16 | beacon | critical | shop/web → 203.0.113.5 | 17 |"} {
		if !strings.Contains(body, want) {
			t.Errorf("PR body lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "### Left out") {
		t.Errorf("held-back edges listed again under Left out:\n%s", body)
	}

	// Cilium: the tunnel's host is not allowed by name either.
	var fqdns []string
	for _, cp := range ToCilium(res, g) {
		for _, eg := range cp.Spec.Egress {
			for _, fq := range eg.ToFQDNs {
				fqdns = append(fqdns, fq.MatchName)
			}
		}
	}
	if strings.Join(fqdns, " ") != "cdn.example.com" {
		t.Errorf("toFQDNs %v, want only cdn.example.com", fqdns)
	}

	// Without the findings (recommend --allow-flagged) every edge is allowed.
	g, res = generate(t, flows, DefaultConfig())
	for name, c := range attack {
		if !judge(t, g, res, c.from, c.to, c.proto, c.port) {
			t.Errorf("without findings, %s is denied", name)
		}
	}
	if len(res.HeldBack()) != 0 {
		t.Errorf("held back without findings: %+v", res.HeldBack())
	}
}

// A finding whose edges no policy can deny (from a system namespace), and
// one of a detector this package does not know, hold nothing back and say
// so; the policies are still proven.
func TestHoldBackWarns(t *testing.T) {
	flows, findings := holdBackCluster()
	t0 := findings[0].Start
	flows = append(flows, schema.Flow{Time: t0, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress,
		Protocol: "TCP", SrcIP: netip.MustParseAddr("10.0.0.3"), DstIP: netip.MustParseAddr("203.0.113.200"), SrcPort: 40000, DstPort: 443,
		Src: schema.Endpoint{Namespace: "kube-system", Pod: "agent-x1", Workload: "agent", WorkloadKind: "DaemonSet",
			Labels: map[string]string{"app": "agent", "io.kubernetes.pod.namespace": "kube-system"}},
		Dst: schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}})
	findings = append(findings,
		schema.Finding{ID: "s1", Detector: "egress-spike", Severity: schema.SeverityWarning, Namespace: "kube-system", Workload: "agent",
			Start: t0, End: t0.Add(time.Minute), Evidence: schema.Evidence{Window: time.Minute, Metric: "flows"}},
		schema.Finding{ID: "s2", Detector: "quantum-leak", Severity: schema.SeverityCritical, Namespace: "shop", Workload: "api", Start: t0, End: t0.Add(time.Minute)})
	cfg := DefaultConfig()
	cfg.Flagged = findings
	g, res := generate(t, flows, cfg)
	if v, err := Prove(g, res); err != nil || len(v) != 0 {
		t.Fatalf("proof: %v %+v", err, v)
	}
	warnings := strings.Join(res.Warnings, "\n")
	for _, want := range []string{
		"kube-system/agent → 203.0.113.200 TCP/443 is evidence of warning egress-spike on kube-system/agent",
		"findings of detector quantum-leak hold back no edge",
	} {
		if !strings.Contains(warnings, want) {
			t.Errorf("warnings lack %q:\n%s", want, warnings)
		}
	}
}

// flowsWithin spreads an edge's flows evenly over the time it was seen.
func TestFlowsWithin(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	st := &EdgeStats{Flows: 600, First: t0, Last: t0.Add(time.Hour)}
	if got := flowsWithin(st, t0.Add(30*time.Minute), t0.Add(31*time.Minute)); got != 10 {
		t.Errorf("a minute of an hour of 600 flows: %v", got)
	}
	if got := flowsWithin(st, t0.Add(2*time.Hour), t0.Add(3*time.Hour)); got != 0 {
		t.Errorf("outside: %v", got)
	}
	one := &EdgeStats{Flows: 3, First: t0, Last: t0}
	if flowsWithin(one, t0, t0.Add(time.Minute)) != 3 || flowsWithin(one, t0.Add(time.Second), t0.Add(time.Minute)) != 0 {
		t.Error("an edge seen at one instant")
	}
}

// The configured monitoring scraper's edges into workloads are never held
// back (the scrape guardrail: its access is always allowed), even when a
// finding on the scraper flags them; a warning names them. Its other
// edges (outside the cluster) are held back as any workload's.
func TestHoldBackSparesScraper(t *testing.T) {
	flows, findings := holdBackCluster()
	t0 := findings[0].Start.Add(-30 * time.Minute)
	prom := schema.Endpoint{Namespace: "monitoring", Pod: "prometheus-0", Workload: "prometheus", WorkloadKind: "StatefulSet",
		Labels: map[string]string{"app": "prometheus", "io.kubernetes.pod.namespace": "monitoring"}}
	db := schema.Endpoint{Namespace: "shop", Pod: "db-6b7f9c8d5d-k2x9z", Workload: "db", WorkloadKind: "Deployment",
		Labels: map[string]string{"app": "db", "io.kubernetes.pod.namespace": "shop"}}
	world := schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}
	scan := t0.Add(40 * time.Minute)
	for i, c := range []struct {
		dst  schema.Endpoint
		ip   string
		port uint16
	}{{db, "10.0.1.5", 9187}, {world, "203.0.113.66", 443}} {
		flows = append(flows, schema.Flow{Time: scan.Add(time.Duration(i) * time.Second), Source: schema.SourceHubble, Verdict: schema.VerdictForwarded,
			Direction: schema.DirectionEgress, Protocol: "TCP", SrcIP: netip.MustParseAddr("10.0.7.7"), DstIP: netip.MustParseAddr(c.ip),
			SrcPort: 40000, DstPort: c.port, Src: prom, Dst: c.dst})
	}
	findings = append(findings, schema.Finding{ID: "m1", Detector: "lateral-scan", Severity: schema.SeverityWarning, Namespace: "monitoring",
		Workload: "prometheus", Start: scan, End: scan.Add(time.Minute), Evidence: schema.Evidence{Window: time.Minute, Flows: 2}})
	cfg := DefaultConfig()
	cfg.Flagged = findings
	cfg.MonitoringNamespace, cfg.MonitoringLabels = "monitoring", map[string]string{"app": "prometheus"}
	g, res := generate(t, flows, cfg)
	if v, err := Prove(g, res); err != nil || len(v) != 0 {
		t.Fatalf("proof: %v %+v", err, v)
	}
	wl := func(w string) Peer { return Peer{Kind: PeerWorkload, Workload: w} }
	if !judge(t, g, res, wl("monitoring/prometheus"), wl("shop/db"), "TCP", 9187) {
		t.Error("the scrape of shop/db is denied")
	}
	if judge(t, g, res, wl("monitoring/prometheus"), Peer{Kind: PeerExternal, Addr: netip.MustParseAddr("203.0.113.66")}, "TCP", 443) {
		t.Error("the scraper's new outside edge is allowed")
	}
	for _, s := range res.HeldBack() {
		if s.Edge.From.Workload == "monitoring/prometheus" && s.Edge.To.Kind == PeerWorkload {
			t.Errorf("scrape held back: %s", EdgeKey(s.Edge))
		}
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "monitoring/prometheus → shop/db TCP/9187 is evidence of warning lateral-scan") {
		t.Errorf("no warning names the scrape:\n%s", w)
	}
}
