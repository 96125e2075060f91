package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"github.com/flowwarden/flowwarden/analyze/analyzetest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var update = flag.Bool("update", false, "regenerate testdata/scenarios' Hubble files and their flow fixtures (TestScenarioFixtures)")

const scenarioDir = "../../testdata/scenarios"

// scenarioStart is the first minute of every scenario's hour.
var scenarioStart = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// scenarios are how the seed detection scenarios are built from the
// published Hubble samples: background flows a minute, and the incident.
// Their expected findings, and the test that runs the detectors over them,
// are analyze's (analyze/scenarios_test.go).
var scenarios = []struct {
	name   string
	perMin int
	inject func(g *gen)
}{
	{"benign-busy-day", 200, nil},
	{"metadata-probe", 20, func(g *gen) { g.metadataProbe(25) }},
	{"sudden-exfiltration", 20, func(g *gen) { g.exfiltrate("reviews-v2", "203.0.113.50", 30, 1, 5000) }},
	{"slow-exfiltration", 20, func(g *gen) { g.exfiltrate("ratings", "198.51.100.7", 20, 20, 200) }},
	{"cross-namespace-scan", 20, func(g *gen) { g.scan(35, 2, 150) }},
	{"misconfigured-namespace", 20, func(g *gen) { g.misconfigure(30, 10, 20) }},
}

// gen builds a scenario from the published Hubble samples.
type gen struct {
	t       *testing.T
	samples []*observer.GetFlowsResponse
	out     []*observer.GetFlowsResponse
	rnd     *rand.Rand
}

func loadSamples(t *testing.T) []*observer.GetFlowsResponse {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	var out []*observer.GetFlowsResponse
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range bytes.Split(raw, []byte("\n")) {
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			var r observer.GetFlowsResponse
			if err := protojson.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, &r)
		}
	}
	return out
}

func (g *gen) emit(r *observer.GetFlowsResponse, at time.Time) {
	r = proto.Clone(r).(*observer.GetFlowsResponse)
	r.Time = timestamppb.New(at)
	r.GetFlow().Time = r.Time
	g.out = append(g.out, r)
}

// background replays the samples, shuffled, perMin flows a minute for an hour.
func (g *gen) background(perMin int) {
	order := g.rnd.Perm(len(g.samples))
	n := 0
	for m := 0; m < 60; m++ {
		for j := 0; j < perMin; j++ {
			at := scenarioStart.Add(time.Duration(m)*time.Minute + time.Duration(j)*time.Minute/time.Duration(perMin))
			g.emit(g.samples[order[n%len(order)]], at)
			n++
		}
	}
}

// template returns a sample flow whose source pod name starts with prefix.
func (g *gen) template(prefix string) *flowpb.Flow {
	for _, s := range g.samples {
		if strings.HasPrefix(s.GetFlow().GetSource().GetPodName(), prefix) && !s.GetFlow().GetIsReply().GetValue() {
			return proto.Clone(s.GetFlow()).(*flowpb.Flow)
		}
	}
	g.t.Fatalf("no sample flow from a pod named %s*", prefix)
	return nil
}

func (g *gen) egressTo(src *flowpb.Flow, dstIP string, port uint32, verdict flowpb.Verdict) *observer.GetFlowsResponse {
	f := proto.Clone(src).(*flowpb.Flow)
	f.Destination = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	f.IP.Destination = dstIP
	f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000 + uint32(g.rnd.IntN(20000)), DestinationPort: port, Flags: &flowpb.TCPFlags{SYN: true}}}}
	f.Verdict = verdict
	f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	f.IsReply = wrapperspb.Bool(false)
	//lint:ignore SA1019 the samples set the deprecated reply flag; clear it too
	f.Reply = false
	f.L7, f.Type, f.DestinationNames = nil, flowpb.FlowType_L3_L4, nil
	if verdict == flowpb.Verdict_DROPPED {
		f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	}
	return &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName()}
}

func (g *gen) metadataProbe(minute int) {
	src := g.template("productpage")
	for i := 0; i < 3; i++ {
		g.emit(g.egressTo(src, "169.254.169.254", 80, flowpb.Verdict_DROPPED), scenarioStart.Add(time.Duration(minute)*time.Minute+time.Duration(10*(i+1))*time.Second))
	}
}

func (g *gen) exfiltrate(pod, dst string, fromMinute, minutes, perMin int) {
	src := g.template(pod)
	for m := 0; m < minutes; m++ {
		for j := 0; j < perMin; j++ {
			at := scenarioStart.Add(time.Duration(fromMinute+m)*time.Minute + time.Duration(j)*time.Minute/time.Duration(perMin))
			g.emit(g.egressTo(src, dst, 443, flowpb.Verdict_FORWARDED), at)
		}
	}
}

func (g *gen) scan(fromMinute, minutes, perMin int) {
	src := g.template("productpage")
	src.Source = &flowpb.Endpoint{ID: 3001, Identity: 51234, Namespace: "tenant-a", PodName: "scanner-7c9f5d8b6-q2w4x",
		Labels: []string{"k8s:app=scanner", "k8s:io.kubernetes.pod.namespace=tenant-a"}}
	src.IP.Source = "10.0.7.23"
	var targets []*flowpb.Flow
	for _, s := range g.samples {
		if d := s.GetFlow().GetDestination(); d.GetNamespace() == "bookinfo" && d.GetPodName() != "" {
			targets = append(targets, s.GetFlow())
		}
	}
	for m := 0; m < minutes; m++ {
		for j := 0; j < perMin; j++ {
			tgt := targets[g.rnd.IntN(len(targets))]
			r := g.egressTo(src, tgt.GetIP().GetDestination(), uint32(1+(m*perMin+j)%1024), flowpb.Verdict_DROPPED)
			r.GetFlow().Destination = proto.Clone(tgt.GetDestination()).(*flowpb.Endpoint)
			g.emit(r, scenarioStart.Add(time.Duration(fromMinute+m)*time.Minute+time.Duration(j)*time.Minute/time.Duration(perMin)))
		}
	}
}

func (g *gen) misconfigure(fromMinute, minutes, perMin int) {
	var tmpl *flowpb.Flow
	for _, s := range g.samples {
		f := s.GetFlow()
		if f.GetSource().GetNamespace() == "bookinfo" && f.GetDestination().GetNamespace() == "bookinfo" &&
			f.GetL4().GetTCP() != nil && !f.GetIsReply().GetValue() {
			tmpl = f
			break
		}
	}
	for m := 0; m < minutes; m++ {
		for j := 0; j < perMin; j++ {
			f := proto.Clone(tmpl).(*flowpb.Flow)
			f.Verdict = flowpb.Verdict_DROPPED
			f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
			f.TrafficDirection = flowpb.TrafficDirection_INGRESS
			f.L7, f.Type = nil, flowpb.FlowType_L3_L4
			r := &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName()}
			g.emit(r, scenarioStart.Add(time.Duration(fromMinute+m)*time.Minute+time.Duration(j)*time.Minute/time.Duration(perMin)+time.Second))
		}
	}
}

// scenarioLines renders flows, in time order, as a scenario's Hubble JSON lines.
func scenarioLines(t *testing.T, flows []*observer.GetFlowsResponse) []byte {
	sort.SliceStable(flows, func(i, j int) bool { return flows[i].GetTime().AsTime().Before(flows[j].GetTime().AsTime()) })
	var buf bytes.Buffer
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, f := range flows {
		b, err := opts.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		// protojson's output is deliberately unstable in spacing; compact it.
		if err := json.Compact(&buf, b); err != nil {
			t.Fatal(err)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func writeScenario(t *testing.T, path string, lines []byte) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(lines)
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readScenario(t *testing.T, path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// goldenFinding is the part of a finding the golden files pin down.
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

// TestScenarioFixtures proves that each seed scenario's Hubble file is what
// the generator below builds from the published samples, and that its flow fixture
// (<name>.flows.jsonl.gz, on which analyze's TestScenarios runs the
// detectors without a parser) holds exactly the flows ingest decodes from
// its Hubble file (<name>.jsonl.gz), so the two cannot drift apart: a
// change in the Hubble decoding fails here until the fixtures are
// regenerated (and then analyze's goldens say whether findings moved).
//
// With -update it first rebuilds the Hubble files from the published
// samples (testdata/hubble) and writes the fixtures from them:
//
//	go test ./cmd/flowwarden -run TestScenarioFixtures -update
//	go test ./analyze -run '^TestScenarios$' -args -update   # goldens, README
func TestScenarioFixtures(t *testing.T) {
	samples := loadSamples(t)
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			g := &gen{t: t, samples: samples, rnd: rand.New(rand.NewPCG(42, uint64(i)))}
			g.background(sc.perMin)
			if sc.inject != nil {
				sc.inject(g)
			}
			lines := scenarioLines(t, g.out)
			file := filepath.Join(scenarioDir, sc.name+".jsonl.gz")
			if *update {
				writeScenario(t, file, lines)
			}
			if !bytes.Equal(readScenario(t, file), lines) {
				t.Fatalf("%s is not what the generator builds from the Hubble samples (regenerate with -update)", file)
			}
			decoded, err := hubble.ReadFlows(t.Context(), file)
			if err != nil {
				t.Fatal(err)
			}
			fixture := filepath.Join(scenarioDir, sc.name+".flows.jsonl.gz")
			if *update {
				if err := analyzetest.WriteFlows(fixture, decoded); err != nil {
					t.Fatal(err)
				}
			}
			fixed, err := analyzetest.ReadFlows(fixture)
			if err != nil {
				t.Fatal(err)
			}
			if len(fixed) != len(decoded) {
				t.Fatalf("%s holds %d flows, ingest decodes %d from the Hubble file", fixture, len(fixed), len(decoded))
			}
			if d := analyzetest.Diff(decoded, fixed); d != "" {
				t.Errorf("%s differs from what ingest decodes (-decoded +fixture):\n%s", fixture, d)
			}
		})
	}
}

// TestDetectScenario is the CLI's end-to-end smoke test of the scenarios:
// `flowwarden detect` over a Hubble scenario file prints the findings
// analyze's TestScenarios pins for its fixture (three detectors fire).
func TestDetectScenario(t *testing.T) {
	const name = "cross-namespace-scan"
	out, err := run(t, "detect", "--hubble-file", filepath.Join(scenarioDir, name+".jsonl.gz"), "--format", "json", "--log-level", "warn")
	if err != nil {
		t.Fatalf("detect: %v\n%s", err, out)
	}
	got, text := goldenFindings(t, out)
	want, err := os.ReadFile(filepath.Join(scenarioDir, name+".golden.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || text != string(want) {
		t.Errorf("detect's findings differ from %s.golden.jsonl\ngot:\n%s\nwant:\n%s", name, text, want)
	}
}

// goldenFindings reads detect's JSON output into the fields the golden
// files keep, and renders them as a golden file does.
func goldenFindings(t *testing.T, out string) ([]goldenFinding, string) {
	t.Helper()
	var got []goldenFinding
	var text bytes.Buffer
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "detect: ") {
			continue // the summary on stderr (run merges the two)
		}
		var g goldenFinding
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatalf("bad detect output %q: %v", sc.Text(), err)
		}
		got = append(got, g)
		b, _ := json.Marshal(g)
		text.Write(b)
		text.WriteByte('\n')
	}
	return got, text.String()
}

// TestDetectOverStoredHistory stores each scenario in ClickHouse and runs
// detect over the stored window instead of the file: the findings are the
// golden ones, so the store keeps everything the detectors look at.
func TestDetectOverStoredHistory(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			dsn, _ := chtest.Database(t)
			file := filepath.Join(scenarioDir, sc.name+".jsonl.gz")
			if out, err := run(t, "ingest", "--clickhouse", dsn, "--hubble-file", file, "--flows-ttl", "0", "--log-level", "warn"); err != nil {
				t.Fatalf("ingest: %v\n%s", err, out)
			}
			out, err := run(t, "detect", "--clickhouse", dsn, "--since", scenarioStart.Add(-time.Hour).Format(time.RFC3339),
				"--until", scenarioStart.Add(3*time.Hour).Format(time.RFC3339), "--format", "json", "--log-level", "warn")
			if err != nil {
				t.Fatalf("detect --since: %v\n%s", err, out)
			}
			_, got := goldenFindings(t, out)
			want, err := os.ReadFile(filepath.Join(scenarioDir, sc.name+".golden.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("findings over the stored history differ from the file's\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestDetectRefusesBadWindows(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "give either files (arguments, --hubble-file, --envoy-file) or --since"},
		{[]string{"--since", "1h", "--hubble-file", "x.json"}, "give either files (arguments, --hubble-file, --envoy-file) or --since"},
		{[]string{"--hubble-file", "x.json", "--until", "2026-01-01"}, "--until needs --since"},
		{[]string{"--since", "yesterday"}, `--since "yesterday": want a duration (24h) or a time`},
		{[]string{"--since", "-1h"}, "want a positive duration"},
		{[]string{"--since", "2026-03-02T10:00:00Z", "--until", "2026-03-02T09:00:00Z"}, "is not before --until"},
	} {
		out, err := run(t, append([]string{"detect", "--log-level", "warn"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("detect %v: %v (%s), want an error with %q", c.args, err, out, c.want)
		}
	}
}
