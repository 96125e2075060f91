package analyze

import (
	"encoding/base32"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/schema"
)

var updateScenarios = flag.Bool("update", false, "regenerate the breach scenarios (flows and golden findings) under testdata/scenarios")

const scenarioDir = "../testdata/scenarios"

// breachStart is the first minute of every breach scenario's hour.
var breachStart = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// expected is a finding a scenario must yield, written by hand: the golden
// files are checked against it, so regenerating them cannot bless a wrong result.
type expected struct{ Detector, Severity, Namespace, Workload, Peer string }

// breachScenarios each hold an hour of the same synthetic cluster, full of
// the hard negatives of the four breach detectors, with one incident.
var breachScenarios = []struct {
	name, about string
	inject      func(g *breachGen)
	want        []expected
}{
	{"breach-lookalikes", "an hour of traffic that looks like the breaches and is not: search-path NXDOMAINs, hashed CDN and ELB names, " +
		"Prometheus resolving short-lived pod names and scraping 300 pods (a node's 30 down), a prober resolving 40 tenant names every minute, periodic vendor calls present from the start " +
		"(one by address only), a new partner API called at random, plaintext to a permissive namespace, to a port-level DISABLE port " +
		"and kubelet probes", nil, nil},
	{"dns-tunnel-fast", "checkout tunnels through queries straight to the domain, 60 encoded characters every half second for ten minutes",
		func(g *breachGen) {
			g.dnsTunnel(g.checkout, "t.exfil-tunnel.net", 30, 10, 500*time.Millisecond, 60, false)
		},
		[]expected{{"dns-tunnel", "critical", "shop", "checkout", "exfil-tunnel.net"}}},
	{"dns-tunnel-slow-drip", "catalog leaks 24 encoded characters every 10 s (2.4 characters/s) through the system resolver, each query after three search-path NXDOMAINs",
		func(g *breachGen) { g.dnsTunnel(g.catalog, "d.metrics-cdn.org", 20, 40, 10*time.Second, 24, true) },
		[]expected{{"dns-tunnel", "critical", "shop", "catalog", "metrics-cdn.org"}}},
	{"lateral-scan", "a compromised cart pod sweeps 250 addresses of the pod network on ten ports for three minutes, most probes unanswered or reset",
		func(g *breachGen) { g.lateralScan(40, 3, 400) },
		[]expected{{"lateral-scan", "critical", "shop", "cart", ""}}},
	{"beacon-c2", "payments-gw calls 203.0.113.77 (no DNS name, never seen) every minute with 10% jitter from minute 10",
		func(g *breachGen) { g.beaconC2(10) },
		[]expected{{"beacon", "critical", "shop", "payments-gw", "203.0.113.77"}}},
	{"plaintext-in-mesh", "a debug pod without a sidecar calls payments/ledger in plaintext (payments is STRICT) every 20 s for ten minutes",
		func(g *breachGen) { g.plaintextCalls(25, 10) },
		[]expected{{"plaintext-in-mesh", "warning", "payments", "ledger", ""}}},
}

type bep struct {
	e  schema.Endpoint
	ip netip.Addr
}

type breachGen struct {
	rnd *rand.Rand
	out []schema.Flow
	// the cluster
	frontend, media, catalog, cart, checkout, payGW, prometheus, coredns, ledger, debug, host bep
}

func podEP(ns, wl, ip string, id uint32) bep {
	return bep{e: schema.Endpoint{Namespace: ns, Workload: wl, WorkloadKind: "Deployment", Pod: wl + "-7d9f8b6c5-" + fmt.Sprintf("%05x", id)[:5],
		Labels: map[string]string{"app": wl}, Identity: id}, ip: netip.MustParseAddr(ip)}
}

func worldEP(ip string) bep {
	return bep{e: schema.Endpoint{Workload: schema.ReservedWorld, WorkloadKind: schema.KindReserved, Identity: 2}, ip: netip.MustParseAddr(ip)}
}

func newBreachGen(seed uint64) *breachGen {
	return &breachGen{rnd: rand.New(rand.NewPCG(18, seed)),
		frontend: podEP("shop", "frontend", "10.0.1.10", 10010), media: podEP("shop", "media", "10.0.1.11", 10011),
		catalog: podEP("shop", "catalog", "10.0.1.12", 10012), cart: podEP("shop", "cart", "10.0.1.13", 10013),
		checkout: podEP("shop", "checkout", "10.0.1.14", 10014), payGW: podEP("shop", "payments-gw", "10.0.1.15", 10015),
		prometheus: podEP("monitoring", "prometheus", "10.0.2.10", 20010), coredns: podEP("kube-system", "coredns", "10.0.0.10", 102),
		ledger: podEP("payments", "ledger", "10.0.3.10", 30010), debug: podEP("shop", "debug-shell", "10.0.1.99", 10099),
		host: bep{e: schema.Endpoint{Workload: schema.ReservedHost, WorkloadKind: schema.KindReserved, Identity: 1}, ip: netip.MustParseAddr("10.0.0.1")}}
}

func (g *breachGen) at(minute int, offset time.Duration) time.Time {
	return breachStart.Add(time.Duration(minute)*time.Minute + offset)
}

func (g *breachGen) jitter() time.Duration {
	return time.Duration(g.rnd.IntN(60000)) * time.Millisecond
}

const (
	answered = iota
	reset
	unanswered
	dropped
)

// tcp emits a connection's first packet and the answer (Hubble's view).
func (g *breachGen) tcp(at time.Time, s, d bep, port uint16, outcome int, names ...string) {
	sport := uint16(32768 + g.rnd.IntN(28000))
	f := schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress, Protocol: "TCP",
		SrcIP: s.ip, DstIP: d.ip, SrcPort: sport, DstPort: port, TCPFlags: "SYN", Src: s.e, Dst: d.e, DstNames: names}
	if outcome == dropped {
		f.Verdict, f.DropReason = schema.VerdictDropped, "POLICY_DENIED"
	}
	g.out = append(g.out, f)
	if outcome == answered || outcome == reset {
		r := schema.Flow{Time: at.Add(time.Millisecond), Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress,
			IsReply: true, Protocol: "TCP", SrcIP: d.ip, DstIP: s.ip, SrcPort: port, DstPort: sport, TCPFlags: "SYN,ACK", Src: d.e, Dst: s.e}
		if outcome == reset {
			r.TCPFlags = "ACK,RST"
		}
		g.out = append(g.out, r)
	}
}

// established emits one packet of a kept-alive connection.
func (g *breachGen) established(at time.Time, s, d bep, port uint16) {
	g.out = append(g.out, schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress,
		Protocol: "TCP", SrcIP: s.ip, DstIP: d.ip, SrcPort: 40000, DstPort: port, TCPFlags: "ACK,PSH", Src: s.e, Dst: d.e})
}

// dns emits a query through Cilium's DNS proxy and its answer.
func (g *breachGen) dns(at time.Time, s bep, name string, rcode uint16) {
	q := schema.Flow{Time: at, Source: schema.SourceHubble, Verdict: schema.VerdictForwarded, Direction: schema.DirectionEgress, Protocol: "UDP",
		SrcIP: s.ip, DstIP: g.coredns.ip, SrcPort: 50000, DstPort: 53, Src: s.e, Dst: g.coredns.e, L7Type: "dns", DNSQuery: name}
	r := q
	r.Time, r.IsReply, r.SrcIP, r.DstIP, r.SrcPort, r.DstPort, r.Src, r.Dst, r.DNSRCode = at.Add(2*time.Millisecond), true, q.DstIP, q.SrcIP, 53, 50000, q.Dst, q.Src, rcode
	g.out = append(g.out, q, r)
}

// resolve asks for an outside host as a pod's resolver does (ndots:5):
// the three search-path expansions answer NXDOMAIN, then the name itself.
func (g *breachGen) resolve(at time.Time, s bep, host string) {
	for i, suffix := range []string{s.e.Namespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"} {
		g.dns(at.Add(time.Duration(i)*3*time.Millisecond), s, host+"."+suffix+".", 3)
	}
	g.dns(at.Add(10*time.Millisecond), s, host+".", 0)
}

// envoy emits an inbound request as the destination's sidecar logs it.
func (g *breachGen) envoy(at time.Time, s, d bep, port uint16, mtls bool, path string) {
	g.out = append(g.out, schema.Flow{Time: at, Source: schema.SourceEnvoy, Verdict: schema.VerdictForwarded, Direction: schema.DirectionIngress,
		Protocol: "TCP", SrcIP: s.ip, DstIP: d.ip, SrcPort: uint16(30000 + g.rnd.IntN(30000)), DstPort: port, Src: s.e, Dst: d.e,
		L7Type: "http", HTTPMethod: "GET", HTTPPath: path, HTTPStatus: 200, Bytes: 1200, MTLS: mtls})
}

func (g *breachGen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rnd.IntN(16)]
	}
	return string(b)
}

// background is the hour of ordinary traffic every breach scenario shares.
func (g *breachGen) background() {
	stripe, gapis := worldEP("198.51.100.10"), worldEP("198.51.100.11")
	licence, backup, vendorPing, partner := worldEP("198.51.100.20"), worldEP("198.51.100.30"), worldEP("192.0.2.40"), worldEP("198.51.100.50")
	var targets []bep
	for i := 1; i <= 300; i++ {
		targets = append(targets, podEP("shop", fmt.Sprintf("web-%d", i%12), fmt.Sprintf("10.0.%d.%d", 5+i/250, i%250), uint32(50000+i)))
	}
	prober := podEP("monitoring", "uptime-prober", "10.0.2.11", 20011)
	tenants := make([]string, 40)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%s-%d.myshop-saas.com", g.hex(6), i)
	}
	next := breachStart.Add(17 * time.Minute) // the partner API: new at minute 17, called at random
	for m := 0; m < 60; m++ {
		// Service-to-service calls and their DNS.
		for i := 0; i < 3; i++ {
			g.tcp(g.at(m, g.jitter()), g.frontend, g.catalog, 8080, answered)
			g.dns(g.at(m, g.jitter()), g.frontend, "catalog.shop.svc.cluster.local.", 0)
		}
		g.tcp(g.at(m, g.jitter()), g.frontend, g.cart, 8080, answered)
		g.tcp(g.at(m, g.jitter()), g.checkout, g.payGW, 8443, answered)
		g.dns(g.at(m, g.jitter()), g.cart, "redis.shop.svc.cluster.local.", 0)
		// Outside APIs through the search path: NXDOMAIN expansions, then the name.
		for s := 0; s < 2; s++ {
			at := g.at(m, time.Duration(s)*30*time.Second+time.Duration(g.rnd.IntN(5000))*time.Millisecond)
			g.resolve(at, g.checkout, "api.stripe.com")
			g.tcp(at.Add(20*time.Millisecond), g.checkout, stripe, 443, answered, "api.stripe.com")
		}
		g.resolve(g.at(m, g.jitter()), g.frontend, "www.googleapis.com")
		g.tcp(g.at(m, g.jitter()), g.frontend, gapis, 443, answered, "www.googleapis.com")
		// Hashed CDN, load-balancer and bucket names, new ones every minute.
		for i := 0; i < 4; i++ {
			g.resolve(g.at(m, g.jitter()), g.media, "d"+g.hex(13)+".cloudfront.net")
		}
		g.resolve(g.at(m, g.jitter()), g.media, "k8s-shop-ingress-"+g.hex(10)+"-"+fmt.Sprint(1000000000+g.rnd.IntN(999999999))+".eu-west-1.elb.amazonaws.com")
		g.resolve(g.at(m, g.jitter()), g.media, "assets-"+g.hex(8)+".s3.eu-west-1.amazonaws.com")
		// Prometheus: short-lived pod names under cluster.local, 120 targets, a few down.
		for i := 0; i < 15; i++ {
			g.dns(g.at(m, g.jitter()), g.prometheus, fmt.Sprintf("10-0-%d-%d.shop.pod.cluster.local.", 5+g.rnd.IntN(3), g.rnd.IntN(250)), 0)
			g.dns(g.at(m, g.jitter()), g.prometheus, fmt.Sprintf("web-%s-%s.web.shop.svc.cluster.local.", g.hex(9), g.hex(5)), uint16(3*g.rnd.IntN(2)))
		}
		for i, tgt := range targets {
			at := g.at(m, time.Duration(i)*150*time.Millisecond)
			switch {
			case i < 30: // a node's pods, unreachable all hour
				g.tcp(at, g.prometheus, tgt, 9090, unanswered)
			case i < 36:
				g.tcp(at, g.prometheus, tgt, 9090, reset)
			default:
				g.established(at, g.prometheus, tgt, 9090)
			}
		}
		// A health checker resolves the platform's 40 tenant names every minute.
		for i, name := range tenants {
			g.dns(g.at(m, time.Duration(i)*time.Second), prober, name+".", 0)
		}
		// Periodic outside calls present since the start.
		if m%5 == 0 {
			g.tcp(g.at(m, 7*time.Second), g.checkout, licence, 443, answered, "lic.acme-licensing.com")
		}
		g.tcp(g.at(m, 15*time.Second), g.cart, backup, 443, answered, "sync.backupvendor.net")
		g.tcp(g.at(m, 5*time.Second), g.frontend, vendorPing, 443, answered)
		g.tcp(g.at(m, 35*time.Second), g.frontend, vendorPing, 443, answered)
		// The partner API, called at random (Poisson, mean a minute).
		for next.Before(g.at(m+1, 0)) {
			if !next.Before(g.at(m, 0)) {
				g.tcp(next, g.catalog, partner, 443, answered, "api.newpartner.io")
			}
			next = next.Add(time.Duration(g.rnd.ExpFloat64() * float64(time.Minute)))
		}
		// The mesh: mTLS into payments, plaintext where it is allowed.
		for i := 0; i < 6; i++ {
			g.envoy(g.at(m, g.jitter()), g.checkout, g.ledger, 8080, true, "/v1/entries")
			g.envoy(g.at(m, time.Duration(i)*10*time.Second), g.host, g.ledger, 15021, false, "/healthz/ready")
		}
		g.envoy(g.at(m, g.jitter()), g.prometheus, g.ledger, 9901, false, "/stats/prometheus")
		g.envoy(g.at(m, g.jitter()), g.frontend, g.catalog, 8080, false, "/products")
		g.envoy(g.at(m, g.jitter()), g.frontend, g.catalog, 8080, true, "/products")
	}
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// dnsTunnel sends chars encoded characters per query under domain every
// period; viaResolver adds the search-path expansions before each query.
func (g *breachGen) dnsTunnel(src bep, domain string, fromMinute, minutes int, period time.Duration, chars int, viaResolver bool) {
	raw := make([]byte, chars)
	for at, seq := g.at(fromMinute, 0), 0; at.Before(g.at(fromMinute+minutes, 0)); at, seq = at.Add(period), seq+1 {
		for i := range raw {
			raw[i] = byte(g.rnd.IntN(256))
		}
		label := strings.ToLower(b32.EncodeToString(raw))[:chars]
		name := fmt.Sprintf("%s.%x.%s", label, seq, domain)
		if viaResolver {
			g.resolve(at, src, name)
		} else {
			g.dns(at, src, name+".", 0)
		}
	}
}

func (g *breachGen) lateralScan(fromMinute, minutes, perMin int) {
	ports := []uint16{22, 80, 443, 2379, 3306, 5432, 6379, 8080, 9090, 10250}
	n := 0
	for m := 0; m < minutes; m++ {
		for j := 0; j < perMin; j++ {
			host := 1 + n/len(ports)%250
			port := ports[n%len(ports)]
			n++
			at := g.at(fromMinute+m, time.Duration(j)*time.Minute/time.Duration(perMin))
			var dst bep
			outcome := unanswered
			if host <= 120 {
				dst = podEP("shop", fmt.Sprintf("web-%d", host%12), fmt.Sprintf("10.0.5.%d", host), uint32(50000+host))
				outcome = reset
				if port == 9090 || port == 8080 {
					outcome = answered
				}
			} else {
				dst = worldEP(fmt.Sprintf("10.0.5.%d", host)) // no endpoint: Cilium says world
			}
			g.tcp(at, g.cart, dst, port, outcome)
		}
	}
}

func (g *breachGen) beaconC2(fromMinute int) {
	c2 := worldEP("203.0.113.77")
	for m := fromMinute; m < 60; m++ {
		g.tcp(g.at(m, 30*time.Second+time.Duration(g.rnd.IntN(12000)-6000)*time.Millisecond), g.payGW, c2, 443, answered)
	}
}

func (g *breachGen) plaintextCalls(fromMinute, minutes int) {
	for at := g.at(fromMinute, 0); at.Before(g.at(fromMinute+minutes, 0)); at = at.Add(20 * time.Second) {
		g.envoy(at, g.debug, g.ledger, 8080, false, "/v1/entries")
	}
}

// breachConfig is the engine configuration the breach scenarios run with:
// the defaults, and the PeerAuthentications of testdata/scenarios/mesh.
func breachConfig(t testing.TB) Config {
	pas, err := ReadPeerAuthentications(filepath.Join(scenarioDir, "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PlaintextInMesh.PeerAuthentications = pas
	return cfg
}

type goldenFinding struct {
	Detector  string    `json:"detector"`
	Severity  string    `json:"severity"`
	Namespace string    `json:"namespace"`
	Workload  string    `json:"workload,omitempty"`
	Peer      string    `json:"peer,omitempty"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Status    string    `json:"status"`
}

func runScenario(t testing.TB, cfg Config, flows []schema.Flow) []schema.Finding {
	var c Collector
	e, err := NewEngine(cfg, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(flows); i += 512 {
		_ = e.Write(t.Context(), flows[i:min(i+512, len(flows))]...)
	}
	e.Flush()
	return c.Findings()
}

// checkScenario compares a scenario's findings with its golden file
// (rewritten first with -update) and with the hand-written expectations
// (in order, or sorted when sorted is set), so that regenerating the
// goldens cannot bless a wrong result.
func checkScenario(t *testing.T, name string, found []schema.Finding, want []expected, sorted bool) {
	t.Helper()
	text := goldenText(found)
	golden := filepath.Join(scenarioDir, name+".golden.jsonl")
	if *updateScenarios {
		if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantText, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if text != string(wantText) {
		t.Errorf("findings differ from %s\ngot:\n%s\nwant:\n%s", golden, text, wantText)
	}
	var got []expected
	for _, f := range found {
		got = append(got, expected{f.Detector, string(f.Severity), f.Namespace, f.Workload, f.Peer})
	}
	if sorted {
		sort.Slice(got, func(i, j int) bool { return fmt.Sprint(got[i]) < fmt.Sprint(got[j]) })
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		for _, f := range found {
			t.Logf("%s %s: %s", f.Detector, f.Severity, f.Summary)
		}
		t.Errorf("findings %v, want exactly %v", got, want)
	}
}

func goldenText(fs []schema.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		r := f.Record()
		g, _ := json.Marshal(goldenFinding{r.Detector, r.Severity, r.Namespace, r.Workload, r.Peer, r.Start, r.End, r.Status})
		b.Write(g)
		b.WriteByte('\n')
	}
	return b.String()
}

func breachFlows(t testing.TB, name string) []schema.Flow {
	t.Helper()
	flows, err := analyzetest.ReadFlows(filepath.Join(scenarioDir, name+".flows.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return flows
}

// TestBreachScenarios runs every detector over each breach scenario: the
// findings are the golden ones and exactly the hand-written expectations
// (no other detector fires on the hard negatives).
func TestBreachScenarios(t *testing.T) {
	if *updateScenarios {
		for i, sc := range breachScenarios {
			g := newBreachGen(uint64(i))
			g.background()
			if sc.inject != nil {
				sc.inject(g)
			}
			sort.SliceStable(g.out, func(a, b int) bool { return g.out[a].Time.Before(g.out[b].Time) })
			if err := analyzetest.WriteFlows(filepath.Join(scenarioDir, sc.name+".flows.jsonl.gz"), g.out); err != nil {
				t.Fatal(err)
			}
		}
	}
	if *updateScenarios {
		var b strings.Builder
		b.WriteString("# Breach scenarios\n\nAn hour of one synthetic cluster (`shop`, `payments`, `monitoring`), full of the hard\n" +
			"negatives of the dns-tunnel, lateral-scan, beacon and plaintext-in-mesh detectors, with one incident each.\n" +
			"`<name>.flows.jsonl.gz` holds the flows (schema.Flow as compact JSON lines, read by `analyze/analyzetest`),\n" +
			"`<name>.golden.jsonl` the findings of all detectors; `mesh/` the PeerAuthentications in force.\n" +
			"Regenerate with `go test ./analyze -run TestBreachScenarios -args -update`.\n\n| scenario | incident | expected findings |\n|---|---|---|\n")
		for _, sc := range breachScenarios {
			var ws []string
			for _, w := range sc.want {
				ws = append(ws, strings.TrimSuffix(fmt.Sprintf("%s %s %s/%s %s", w.Severity, w.Detector, w.Namespace, w.Workload, w.Peer), " "))
			}
			if len(ws) == 0 {
				ws = []string{"none"}
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", sc.name, sc.about, strings.Join(ws, "; "))
		}
		if err := os.WriteFile(filepath.Join(scenarioDir, "BREACH.md"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := breachConfig(t)
	for _, sc := range breachScenarios {
		t.Run(sc.name, func(t *testing.T) {
			found := runScenario(t, cfg, breachFlows(t, sc.name))
			checkScenario(t, sc.name, found, sc.want, false)
		})
	}
}

// firstAlert replays flows and returns the event time of the flow on which
// the detector first reported a finding.
func firstAlert(t testing.TB, cfg Config, flows []schema.Flow, detector string) (time.Time, bool) {
	var at time.Time
	var clock time.Time
	e, err := NewEngine(cfg, FindingFunc(func(f schema.Finding) {
		if f.Detector == detector && at.IsZero() {
			at = clock
		}
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 16 flows (seconds of these scenarios): the delay is exact
	// to the batch's last flow, and the replay quick.
	for i := 0; i < len(flows); i += 16 {
		batch := flows[i:min(i+16, len(flows))]
		clock = batch[len(batch)-1].Time
		_ = e.Write(t.Context(), batch...)
	}
	e.Flush()
	return at, !at.IsZero()
}

// TestBreachDetectionDelay: how long after each incident began its detector
// spoke, against the bar of the issue (DNS tunnels within 15 minutes, a
// one-a-minute beacon within the hour).
func TestBreachDetectionDelay(t *testing.T) {
	cfg := breachConfig(t)
	for _, c := range []struct {
		scenario, detector string
		began              time.Time
		within             time.Duration
	}{
		{"dns-tunnel-fast", DetectorDNSTunnel, breachStart.Add(30 * time.Minute), 15 * time.Minute},
		{"dns-tunnel-slow-drip", DetectorDNSTunnel, breachStart.Add(20 * time.Minute), 15 * time.Minute},
		{"lateral-scan", DetectorLateralScan, breachStart.Add(40 * time.Minute), 2 * time.Minute},
		{"beacon-c2", DetectorBeacon, breachStart.Add(10 * time.Minute), time.Hour},
		{"plaintext-in-mesh", DetectorPlaintextInMesh, breachStart.Add(25 * time.Minute), time.Minute},
	} {
		at, ok := firstAlert(t, cfg, breachFlows(t, c.scenario), c.detector)
		if !ok || at.Sub(c.began) > c.within {
			t.Errorf("%s: %s spoke at %v, %v after the incident began; want within %v", c.scenario, c.detector, at, at.Sub(c.began), c.within)
			continue
		}
		t.Logf("%s: %s found it %v after it began", c.scenario, c.detector, at.Sub(c.began))
	}
}

// TestDNSTunnelSlowestRate sweeps the drip rate of a base32 tunnel through
// the system resolver (24 characters a query, search-path expansions
// first) and reports the slowest one found within 15 minutes.
func TestDNSTunnelSlowestRate(t *testing.T) {
	cfg := DefaultConfig()
	slowest := 0.0
	for _, charsPerSec := range []float64{4, 2, 1, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3} {
		g := newBreachGen(99)
		period := time.Duration(24 / charsPerSec * float64(time.Second))
		g.dnsTunnel(g.catalog, "d.metrics-cdn.org", 0, 20, period, 24, true)
		at, ok := firstAlert(t, cfg, g.out, DetectorDNSTunnel)
		found := ok && at.Sub(breachStart) <= 15*time.Minute
		t.Logf("%.1f characters/s (%.2f B/s of payload): found within 15 minutes: %v", charsPerSec, charsPerSec*5/8, found)
		if found {
			slowest = charsPerSec
		}
		if charsPerSec >= 1 && !found {
			t.Errorf("a drip of %.1f characters/s went unseen for 15 minutes", charsPerSec)
		}
	}
	t.Logf("slowest drip found within 15 minutes: %.1f characters/s = %.2f B/s of payload", slowest, slowest*5/8)
}

// A cluster domain that is itself under a public suffix (k8s.acme.io):
// only the search-domain rule keeps the cluster's own names out.
func TestDNSTunnelSkipsClusterDomainNames(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DNSTunnel.ClusterDomain = "k8s.acme.io"
	g := newBreachGen(7)
	for i := 0; i < 600; i++ {
		at := breachStart.Add(time.Duration(i) * time.Second)
		g.dns(at, g.prometheus, fmt.Sprintf("web-%s-%s.web.shop.svc.k8s.acme.io.", g.hex(9), g.hex(5)), 0)
		g.dns(at, g.checkout, fmt.Sprintf("%s.t.exfil-tunnel.net.%s.svc.k8s.acme.io.", g.hex(40), "shop"), 3)
	}
	if found := runScenario(t, cfg, g.out); len(found) != 0 {
		t.Errorf("names under the cluster domain were judged: %+v", found)
	}
}

// TestBeaconScoreSeparates draws many interval sequences: a C2 implant's
// (a minute with ±10% jitter) must score as a beacon, random calls
// (Poisson, mean a minute) and user sessions (bursts of quick calls between
// random pauses) must not; the rates, and the rate for ±25% jitter, are logged.
func TestBeaconScoreSeparates(t *testing.T) {
	b := newBeacon(defaultBeacon(), &Config{MaxKeys: 1, Samples: 1}, nil, NewMetrics(nil))
	rnd := rand.New(rand.NewPCG(1, 2))
	judge := func(next func() time.Duration) bool {
		st := &beaconState{}
		at := breachStart
		for i := 0; i < 13; i++ { // the fewest connections judged
			st.times[st.n%beaconRing] = at.UnixNano()
			st.n++
			at = at.Add(next())
		}
		score, median := b.score(st)
		return score >= b.cfg.MinScore && median >= b.cfg.MinInterval
	}
	jittered := func(pct int) func() time.Duration {
		return func() time.Duration {
			return time.Minute + time.Duration(rnd.IntN(2*600*pct+1)-600*pct)*time.Millisecond
		}
	}
	burst := 0
	const n = 2000
	var c2, c2wide, poisson, sessions int
	for i := 0; i < n; i++ {
		if judge(jittered(10)) {
			c2++
		}
		if judge(jittered(25)) {
			c2wide++
		}
		if judge(func() time.Duration { return time.Duration(rnd.ExpFloat64() * float64(time.Minute)) }) {
			poisson++
		}
		if judge(func() time.Duration { // 3 to 8 calls 1-3 s apart, then a pause of 5 minutes on average
			if burst--; burst > 0 {
				return time.Duration(1000+rnd.IntN(2000)) * time.Millisecond
			}
			burst = 3 + rnd.IntN(6)
			return time.Duration(rnd.ExpFloat64() * float64(5*time.Minute))
		}) {
			sessions++
		}
	}
	t.Logf("13 connections judged as a beacon: C2 ±10%% jitter %d/%d, ±25%% jitter %d/%d; Poisson %d/%d, user sessions %d/%d",
		c2, n, c2wide, n, poisson, n, sessions, n)
	if c2 < n*95/100 || poisson > n/100 || sessions > n/100 {
		t.Errorf("C2 found %d/%d (want >= 95%%), random calls taken for beacons %d and %d of %d (want <= 1%%)", c2, n, poisson, sessions, n)
	}
}

// Constant memory per workload: a crawler resolving a new site every 100 ms
// keeps at most Domains entries, and a slow drip hidden in it is still found.
func TestDNSTunnelInsideACrawler(t *testing.T) {
	cfg := DefaultConfig()
	g := newBreachGen(11)
	g.dnsTunnel(g.media, "d.metrics-cdn.org", 0, 20, 10*time.Second, 24, false)
	for i := 0; i < 20*60*10; i++ {
		g.dns(breachStart.Add(time.Duration(i)*100*time.Millisecond), g.media, fmt.Sprintf("img-%s.site-%d.com.", g.hex(4), i), 0)
	}
	sort.SliceStable(g.out, func(a, b int) bool { return g.out[a].Time.Before(g.out[b].Time) })
	var c Collector
	e, err := NewEngine(cfg, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Write(t.Context(), g.out...)
	for _, d := range e.detectors {
		if dt, ok := d.(*dnsTunnel); ok {
			for _, w := range dt.ws {
				if len(w.doms) > cfg.DNSTunnel.Domains {
					t.Errorf("%v tracks %d domains, limit %d", w.k, len(w.doms), cfg.DNSTunnel.Domains)
				}
			}
		}
	}
	e.Flush()
	var got []string
	for _, f := range c.Findings() {
		got = append(got, f.Detector+" "+f.Peer)
	}
	if fmt.Sprint(got) != "[dns-tunnel metrics-cdn.org]" {
		t.Errorf("findings %v, want the drip's domain only", got)
	}
}
