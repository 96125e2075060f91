package hubble

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The replay server against the real Hubble CLI (Cilium v1.20.2, built from
// Cilium's own module in testdata/hubblecli): every answer is compared with
// the same selection computed here straight from the recorded files, with
// encoding/json and none of the server's code.

// hubbleCLIFiles: the published samples (no drops), the published drops,
// and a scenario with 300 cross-namespace denials.
func hubbleCLIFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("samples: %v", err)
	}
	return append(files,
		"../../testdata/hubble/cilium-pr40519-dropped-world.jsonl",
		"../../testdata/hubble/cilium-docs-export-events.log",
		"../../testdata/scenarios/cross-namespace-scan.jsonl.gz")
}

// buildHubbleCLI builds testdata/hubblecli with its own go.mod. The binary
// is kept in the user's cache directory under a hash of the module's files
// and the Go version, so later runs (make race, a second go test) reuse it;
// a first build compiles about 1,200 packages of Cilium's module.
func buildHubbleCLI(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the Hubble CLI from Cilium's module")
	}
	dir, err := filepath.Abs("../../testdata/hubblecli")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version())
	for _, name := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "flowwarden-test", fmt.Sprintf("hubble-%x", h.Sum(nil)[:8]))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	began := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("building the Hubble CLI in %s: %v\n%s", dir, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("hubble CLI built in %s", time.Since(began).Round(time.Millisecond))
	return bin
}

// recorded is one flow of a file, as this test reads it.
type recorded struct {
	time                time.Time
	verdict             string
	srcNs, srcPod       string
	dstNs, dstPod       string
	dstPort             int
	hasPort             bool
	node                string
	srcLabels           []string
	dstLabels           []string
	dstIP               string
	dstNames            []string
	l4                  string // TCP, UDP, ICMPv4, ...
	eventType           int
	isReply             *bool
	httpCode            int
	httpMethod, httpURL string
}

func readRecorded(t *testing.T, files []string) []recorded {
	t.Helper()
	type endpoint struct {
		Namespace string   `json:"namespace"`
		PodName   string   `json:"pod_name"`
		Labels    []string `json:"labels"`
	}
	type port struct {
		DestinationPort int `json:"destination_port"`
	}
	type line struct {
		Flow *struct {
			Time        string           `json:"time"`
			Verdict     string           `json:"verdict"`
			Source      endpoint         `json:"source"`
			Destination endpoint         `json:"destination"`
			L4          map[string]*port `json:"l4"`
			NodeName    string           `json:"node_name"`
			IP          struct {
				Destination string `json:"destination"`
			} `json:"IP"`
			DestinationNames []string `json:"destination_names"`
			EventType        struct {
				Type int `json:"type"`
			} `json:"event_type"`
			IsReply *bool `json:"is_reply"`
			L7      struct {
				HTTP *struct {
					Code   int    `json:"code"`
					Method string `json:"method"`
					URL    string `json:"url"`
				} `json:"http"`
			} `json:"l7"`
		} `json:"flow"`
		Time     string `json:"time"`
		NodeName string `json:"node_name"`
	}
	var out []recorded
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var in io.Reader = f
		if strings.HasSuffix(path, ".gz") {
			if in, err = gzip.NewReader(f); err != nil {
				t.Fatal(err)
			}
		}
		sc := bufio.NewScanner(in)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var l line
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Flow == nil {
				continue
			}
			ts := l.Flow.Time
			if ts == "" {
				ts = l.Time
			}
			tm, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			r := recorded{time: tm, verdict: l.Flow.Verdict, node: l.Flow.NodeName,
				srcNs: l.Flow.Source.Namespace, srcPod: l.Flow.Source.PodName,
				dstNs: l.Flow.Destination.Namespace, dstPod: l.Flow.Destination.PodName}
			if r.node == "" {
				r.node = l.NodeName
			}
			for proto, p := range l.Flow.L4 {
				r.l4 = proto
				if proto == "TCP" || proto == "UDP" || proto == "SCTP" {
					r.dstPort, r.hasPort = p.DestinationPort, true
				}
			}
			r.srcLabels, r.dstLabels = l.Flow.Source.Labels, l.Flow.Destination.Labels
			r.dstIP, r.dstNames = l.Flow.IP.Destination, l.Flow.DestinationNames
			r.eventType, r.isReply = l.Flow.EventType.Type, l.Flow.IsReply
			if h := l.Flow.L7.HTTP; h != nil {
				r.httpCode, r.httpMethod, r.httpURL = h.Code, h.Method, h.URL
			}
			out = append(out, r)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].time.Before(out[j].time) })
	return out
}

func countRecorded(flows []recorded, keep func(recorded) bool) int {
	n := 0
	for _, f := range flows {
		if keep(f) {
			n++
		}
	}
	return n
}

// hubbleFlowTimes parses "hubble observe -o jsonpb" output: one
// GetFlowsResponse per line; it returns the flows' times in order.
func hubbleFlowTimes(t *testing.T, out []byte) []time.Time {
	t.Helper()
	var times []time.Time
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		var resp struct {
			Flow *struct {
				Time string `json:"time"`
			} `json:"flow"`
		}
		if err := json.Unmarshal([]byte(l), &resp); err != nil {
			t.Fatalf("hubble output line %q: %v", l, err)
		}
		if resp.Flow == nil {
			continue
		}
		tm, err := time.Parse(time.RFC3339Nano, resp.Flow.Time)
		if err != nil {
			t.Fatalf("hubble flow time %q: %v", resp.Flow.Time, err)
		}
		times = append(times, tm)
	}
	return times
}

func runHubble(t *testing.T, bin, home string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home) // no user config
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hubble %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func startReplayServer(t *testing.T, cfg ReplayConfig) *Replay {
	t.Helper()
	r, err := NewReplay(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replay: %v", err)
		}
	})
	return r
}

func TestReplayWithHubbleCLI(t *testing.T) {
	bin := buildHubbleCLI(t)
	home := t.TempDir()
	files := hubbleCLIFiles(t)
	rec := readRecorded(t, files)
	r := startReplayServer(t, ReplayConfig{Files: files, Listen: "127.0.0.1:0"})
	if r.Len() != len(rec) {
		t.Fatalf("replay loaded %d flows, the files hold %d", r.Len(), len(rec))
	}
	server := "--server=" + r.Addr()

	observe := func(args ...string) []time.Time {
		t.Helper()
		return hubbleFlowTimes(t, runHubble(t, bin, home, append([]string{"observe", server, "-o", "jsonpb"}, args...)...))
	}
	podPrefix := func(ns, prefix string) func(recorded) bool {
		return func(f recorded) bool {
			return f.srcNs == ns && strings.HasPrefix(f.srcPod, prefix) || f.dstNs == ns && strings.HasPrefix(f.dstPod, prefix)
		}
	}
	for _, tc := range []struct {
		args []string
		keep func(recorded) bool
	}{
		{[]string{"--all"}, func(recorded) bool { return true }},
		{[]string{"--all", "--verdict", "DROPPED"}, func(f recorded) bool { return f.verdict == "DROPPED" }},
		{[]string{"--all", "--verdict", "DROPPED", "--verdict", "REDIRECTED"}, func(f recorded) bool {
			return f.verdict == "DROPPED" || f.verdict == "REDIRECTED"
		}},
		{[]string{"--all", "--namespace", "kube-system"}, func(f recorded) bool { return f.srcNs == "kube-system" || f.dstNs == "kube-system" }},
		{[]string{"--all", "--to-port", "53"}, func(f recorded) bool { return f.hasPort && f.dstPort == 53 }},
		{[]string{"--all", "--pod", "bookinfo/ratings-"}, podPrefix("bookinfo", "ratings-")},
		{[]string{"--all", "--from-namespace", "bookinfo", "--to-port", "9080"}, func(f recorded) bool {
			return f.srcNs == "bookinfo" && f.hasPort && f.dstPort == 9080
		}},
		{[]string{"--all", "--not", "--namespace", "kube-system"}, func(f recorded) bool { return f.srcNs != "kube-system" && f.dstNs != "kube-system" }},
		// More of the filters the CLI sends, each against the files.
		{[]string{"--all", "--label", "k8s:app=ratings"}, func(f recorded) bool {
			return slices.Contains(f.srcLabels, "k8s:app=ratings") || slices.Contains(f.dstLabels, "k8s:app=ratings")
		}},
		{[]string{"--all", "--to-label", "reserved:world"}, func(f recorded) bool { return slices.Contains(f.dstLabels, "reserved:world") }},
		{[]string{"--all", "--to-ip", "10.128.0.0/12"}, func(f recorded) bool {
			a, err := netip.ParseAddr(f.dstIP)
			return err == nil && netip.MustParsePrefix("10.128.0.0/12").Contains(a)
		}},
		{[]string{"--all", "--to-fqdn", "*.one.one"}, func(f recorded) bool {
			return slices.ContainsFunc(f.dstNames, func(n string) bool { return strings.HasSuffix(n, ".one.one") })
		}},
		{[]string{"--all", "--protocol", "udp"}, func(f recorded) bool { return f.l4 == "UDP" }},
		// A node name without a cluster matches in any cluster.
		{[]string{"--all", "--node-name", "kind-*"}, func(f recorded) bool {
			node := f.node
			if i := strings.LastIndex(node, "/"); i >= 0 {
				node = node[i+1:]
			}
			return strings.HasPrefix(node, "kind-")
		}},
		{[]string{"--all", "--type", "l7"}, func(f recorded) bool { return f.eventType == 129 }},
		{[]string{"--all", "--http-status", "5+"}, func(f recorded) bool { return f.httpCode >= 500 && f.httpCode < 600 }},
		{[]string{"--all", "--http-method", "get", "--http-path", "^/ratings/[0-9]+$"}, func(f recorded) bool {
			u, err := url.Parse(f.httpURL)
			return strings.EqualFold(f.httpMethod, "GET") && err == nil && regexp.MustCompile(`^/ratings/[0-9]+$`).MatchString(u.Path)
		}},
		{[]string{"--all", "--reply"}, func(f recorded) bool { return f.isReply != nil && *f.isReply }},
		// Not a reply: is_reply false, or unknown on a drop.
		{[]string{"--all", "--not-reply"}, func(f recorded) bool {
			return f.isReply != nil && !*f.isReply || f.isReply == nil && f.verdict == "DROPPED"
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := observe(tc.args...)
			want := countRecorded(rec, tc.keep)
			t.Logf("hubble observe %s: %d flows; the files select %d", strings.Join(tc.args, " "), len(got), want)
			if len(got) != want || want == 0 {
				t.Fatalf("hubble observe %s: %d flows, the files select %d", strings.Join(tc.args, " "), len(got), want)
			}
			if !slices.IsSortedFunc(got, func(a, b time.Time) int { return a.Compare(b) }) {
				t.Fatal("flows out of time order")
			}
		})
	}

	t.Run("--first and --last", func(t *testing.T) {
		first := observe("--first", "7")
		last := observe("--last", "9")
		if len(first) != 7 || len(last) != 9 {
			t.Fatalf("--first 7 gave %d flows, --last 9 gave %d", len(first), len(last))
		}
		for i, tm := range first {
			if !tm.Equal(rec[i].time) {
				t.Fatalf("--first 7: flow %d at %s, the files' is at %s", i, tm, rec[i].time)
			}
		}
		for i, tm := range last {
			if want := rec[len(rec)-9+i].time; !tm.Equal(want) {
				t.Fatalf("--last 9: flow %d at %s, the files' is at %s", i, tm, want)
			}
		}
		// --first counts selected flows: the first 3 drops.
		drops := observe("--first", "3", "--verdict", "DROPPED")
		var want []time.Time
		for _, f := range rec {
			if f.verdict == "DROPPED" && len(want) < 3 {
				want = append(want, f.time)
			}
		}
		if fmt.Sprint(drops) != fmt.Sprint(want) {
			t.Fatalf("--first 3 --verdict DROPPED: %v, want %v", drops, want)
		}
	})

	t.Run("field masks", func(t *testing.T) {
		// The default output asks for the fields it prints (a field mask).
		compact := strings.Split(strings.TrimSpace(string(runHubble(t, bin, home, "observe", server, "--last", "4", "--verdict", "DROPPED"))), "\n")
		if len(compact) != 4 || !strings.Contains(compact[0], "DROPPED") {
			t.Fatalf("hubble observe --last 4 --verdict DROPPED (compact):\n%s", strings.Join(compact, "\n"))
		}
		out := runHubble(t, bin, home, "observe", server, "-o", "jsonpb", "--last", "3", "--field-mask", "time,verdict,source.namespace")
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 3 {
			t.Fatalf("--field-mask: %d lines", len(lines))
		}
		for _, l := range lines {
			var resp struct {
				Flow map[string]json.RawMessage `json:"flow"`
			}
			if err := json.Unmarshal([]byte(l), &resp); err != nil {
				t.Fatal(err)
			}
			for k := range resp.Flow {
				if k != "time" && k != "verdict" && k != "source" {
					t.Fatalf("--field-mask time,verdict,source.namespace: the flow has %q: %s", k, l)
				}
			}
			if src := string(resp.Flow["source"]); src != "" && strings.Contains(src, "pod_name") {
				t.Fatalf("--field-mask kept source.pod_name: %s", l)
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		out := runHubble(t, bin, home, "status", server, "-o", "json")
		// Protobuf's JSON: 64-bit numbers as strings, wrappers unwrapped.
		var st struct {
			NumFlows          uint64 `json:"num_flows,string"`
			MaxFlows          uint64 `json:"max_flows,string"`
			NumConnectedNodes uint32 `json:"num_connected_nodes"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("hubble status -o json: %v\n%s", err, out)
		}
		nodes := map[string]bool{}
		for _, f := range rec {
			nodes[f.node] = true
		}
		if st.NumFlows != uint64(len(rec)) || st.MaxFlows != uint64(len(rec)) || st.NumConnectedNodes != uint32(len(nodes)) {
			t.Fatalf("hubble status: %s\nwant %d flows of %d, %d nodes", out, len(rec), len(rec), len(nodes))
		}
		compact := string(runHubble(t, bin, home, "status", server))
		if !strings.Contains(compact, "Healthcheck (via "+r.Addr()+"): Ok") {
			t.Fatalf("hubble status:\n%s", compact)
		}
	})

	t.Run("list nodes", func(t *testing.T) {
		out := runHubble(t, bin, home, "list", "nodes", server, "-o", "json")
		var nodes []struct {
			Name     string `json:"name"`
			NumFlows uint64 `json:"num_flows,string"`
			State    string `json:"state"`
		}
		if err := json.Unmarshal(out, &nodes); err != nil {
			t.Fatalf("hubble list nodes -o json: %v\n%s", err, out)
		}
		want := map[string]uint64{}
		for _, f := range rec {
			want[f.node]++
		}
		got := map[string]uint64{}
		for _, n := range nodes {
			got[n.Name] = n.NumFlows
			if n.State != "NODE_CONNECTED" {
				t.Errorf("node %s state %q", n.Name, n.State)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("hubble list nodes: %v, the files: %v", got, want)
		}
		table := string(runHubble(t, bin, home, "list", "nodes", server))
		if len(strings.Split(strings.TrimSpace(table), "\n")) != len(want)+1 {
			t.Fatalf("hubble list nodes, %d nodes expected:\n%s", len(want), table)
		}
	})

	t.Run("--last N --follow", func(t *testing.T) {
		// A looping replay: its buffer is one pass, the next passes are new
		// flows. --last 5 --follow must give the newest 5, then new ones.
		lr := startReplayServer(t, ReplayConfig{Files: files, Listen: "127.0.0.1:0", Loop: true, Rate: 2000})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "observe", "--server="+lr.Addr(), "-o", "jsonpb", "--last", "5", "--follow")
		cmd.Env = append(os.Environ(), "HOME="+home)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lines []byte
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 4<<20)
		for n := 0; n < 8 && sc.Scan(); n++ {
			lines = append(append(lines, sc.Bytes()...), '\n')
		}
		cancel()
		_ = cmd.Wait()
		got := hubbleFlowTimes(t, lines)
		if len(got) != 8 {
			t.Fatalf("--last 5 --follow: %d flows before the stream ended\n%s", len(got), stderr.String())
		}
		for i := range 5 {
			if want := rec[len(rec)-5+i].time; !got[i].Equal(want) {
				t.Fatalf("--last 5 --follow: flow %d at %s, the files' newest are at %s", i, got[i], want)
			}
		}
		// Then the next pass: the oldest recorded flows, all moved by one
		// and the same shift past the newest.
		shift := got[5].Sub(rec[0].time)
		for i := 5; i < 8; i++ {
			if !got[i].After(rec[len(rec)-1].time) || got[i].Sub(rec[i-5].time) != shift {
				t.Fatalf("--last 5 --follow: new flow %d at %s, want the recorded %s moved by %s", i, got[i], rec[i-5].time, shift)
			}
		}
	})
}
