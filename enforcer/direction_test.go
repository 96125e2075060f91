package enforcer

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// On the published samples, the replies ratings:9080 → reviews-v3:58634 and
// :58950 and jaeger-default:14250 → otelcol:39472 (recorded at TO_OVERLAY,
// with no is_reply, no reply and no traffic direction) teach nothing: no
// policy, evidence line or left-out entry names their ports, whatever the
// order of the flows.
func TestNoRuleFromRepliesOnSamples(t *testing.T) {
	flows := sampleFlows(t)
	outputs := func(flows []schema.Flow) string {
		g, res := generate(t, flows, DefaultConfig())
		dir := t.TempDir()
		if err := WriteLeftOut(dir, res.Skipped); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString(render(t, res))
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			c, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(c)
		}
		for _, e := range res.Evidence {
			fmt.Fprintf(&b, "%+v\n", e)
		}
		for e := range g.Edges {
			b.WriteString(EdgeKey(e) + "\n")
		}
		fmt.Fprintf(&b, "ignored %v\n", g.Ignored)
		return b.String()
	}
	want := outputs(flows)
	for _, port := range []string{"58634", "58950", "39472"} {
		if strings.Contains(want, port) {
			t.Errorf("port %s of a reply is in the generated files, evidence or edges", port)
		}
	}
	if !strings.Contains(want, "a reply:") {
		t.Errorf("replies not counted: %s", want[strings.LastIndex(want, "ignored"):])
	}
	// The edges, evidence and counts are lines from maps: sort them before
	// comparing orders.
	norm := func(s string) string {
		l := strings.Split(s, "\n")
		slices.Sort(l)
		return strings.Join(l, "\n")
	}
	for seed := range uint64(10) {
		shuffled := append([]schema.Flow(nil), flows...)
		rand.New(rand.NewPCG(seed, 7)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := outputs(shuffled); norm(got) != norm(want) {
			t.Fatalf("shuffle %d changes what is learned", seed)
		}
	}
}

// One flow per signal, as Hubble exports them: each learned from its
// opener's side or not at all.
func TestDirectionSignals(t *testing.T) {
	const ns = "shop"
	ep := func(app string, pod bool) string {
		s := `{"namespace":"` + ns + `","labels":["k8s:app=` + app + `","k8s:io.kubernetes.pod.namespace=` + ns + `"]`
		if pod {
			s += `,"pod_name":"` + app + `-5d8f7c9b4-q2w7x"`
		}
		return s + "}"
	}
	ips := map[string]string{"web": "10.0.0.1", "api": "10.0.0.2", "db": "10.0.0.3", "cache": "10.0.0.4", "queue": "10.0.0.5", "auth": "10.0.0.6"}
	line := func(src string, sport int, dst string, dport int, flags, extra string) string {
		return `{"flow":{"time":"2026-11-01T10:00:00Z","verdict":"FORWARDED","IP":{"source":"` + ips[src] + `","destination":"` + ips[dst] + `","ipVersion":"IPv4"},` +
			`"l4":{"TCP":{"source_port":` + fmt.Sprint(sport) + `,"destination_port":` + fmt.Sprint(dport) + `,"flags":{` + flags + `}}},` +
			`"source":` + ep(src, true) + `,"destination":` + ep(dst, true) + `,"Type":"L3_L4"` + extra + `},"node_name":"n1"}`
	}
	lines := []string{
		// web → api:8080, a request Cilium tracked; and api's answer marked
		// with the older reply field only.
		line("web", 40000, "api", 8080, `"SYN":true`, `,"traffic_direction":"EGRESS","is_reply":false`),
		line("api", 8080, "web", 40000, `"ACK":true,"PSH":true`, `,"traffic_direction":"EGRESS","reply":true`),
		// db's SYN+ACK to api, with no reply field at all: an answer.
		line("db", 5432, "api", 41000, `"SYN":true,"ACK":true`, ``),
		// cache's RST+ACK to web, marked as not a reply: still an answer.
		line("cache", 6379, "web", 42000, `"RST":true,"ACK":true`, `,"traffic_direction":"EGRESS","is_reply":false`),
		// queue → auth with no signal, and neither port seen listening:
		// direction unknown, nothing learned.
		line("queue", 43000, "auth", 44000, `"ACK":true`, `,"trace_observation_point":"TO_OVERLAY"`),
		// api:8080 → web:40000 again at TO_OVERLAY, no signal: api listens
		// on 8080 (the tracked request), so a reply.
		line("api", 8080, "web", 40000, `"ACK":true`, `,"trace_observation_point":"TO_OVERLAY"`),
		// web:45000 → api:8080 at TO_OVERLAY: a request to a listening port.
		line("web", 45000, "api", 8080, `"ACK":true`, `,"trace_observation_point":"TO_OVERLAY"`),
	}
	var flows []schema.Flow
	dec := hubble.NewDecoder()
	for _, l := range lines {
		f, err := dec.Decode([]byte(l))
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		flows = append(flows, f)
	}
	if !flows[1].IsReply {
		t.Fatal("the older reply field is not read as a reply")
	}
	wantOpener := []Opener{OpenedBySource, OpenedByDestination, OpenedByDestination, OpenedByDestination, OpenedUnknown, OpenedUnknown, OpenedUnknown}
	for i := range flows {
		if got := FlowOpener(&flows[i]); got != wantOpener[i] {
			t.Errorf("flow %d: FlowOpener %s, want %s", i, got, wantOpener[i])
		}
	}
	// Every order of the flows learns the same.
	for seed := range uint64(6) {
		order := append([]schema.Flow(nil), flows...)
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		g, res := generate(t, order, DefaultConfig())
		var edges []string
		for e, st := range g.Edges {
			edges = append(edges, fmt.Sprintf("%s×%d", EdgeKey(e), st.Flows))
		}
		if len(edges) != 1 || edges[0] != "shop/web → shop/api TCP/8080×2" {
			t.Errorf("shuffle %d: edges %v, want only web → api:8080 (2 flows)", seed, edges)
		}
		if g.Ignored[IgnoredReply] != 4 || g.DirectionUnknown() != 1 {
			t.Errorf("shuffle %d: ignored %v: want 4 replies, 1 of unknown direction", seed, g.Ignored)
		}
		y := render(t, res)
		for _, port := range []string{"40000", "41000", "42000", "43000", "44000", "45000", "5432", "6379"} {
			if strings.Contains(y, "port: "+port) {
				t.Errorf("shuffle %d: a policy allows port %s, seen only in a reply or an undirected flow", seed, port)
			}
		}
		if _, ok := g.Workloads["shop/queue"]; ok {
			t.Errorf("shuffle %d: a flow of unknown direction made workload shop/queue", seed)
		}
	}
	// verify: a reply is not judged; the undirected flow is counted, once
	// the listening ports are learned.
	_, res := generate(t, flows, DefaultConfig())
	v, err := NewVerifier(res.Policies)
	if err != nil {
		t.Fatal(err)
	}
	for i := range flows {
		v.Learn(&flows[i])
	}
	judged := 0
	for i := range flows {
		d, ok := v.Check(&flows[i])
		if !ok {
			continue
		}
		judged++
		if !d.Allowed {
			t.Errorf("flow %d denied: %s", i, d.Reason)
		}
	}
	if judged != 2 || v.DirectionUnknown != 1 {
		t.Errorf("%d flows judged (want the 2 requests), %d of unknown direction (want 1)", judged, v.DirectionUnknown)
	}
}
