package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// detectKeys runs detect over files and returns its findings as sorted
// keys: detector, severity, subject, window, status and flow count.
func detectKeys(t *testing.T, files ...string) []string {
	t.Helper()
	out, err := run(t, append([]string{"detect", "-o", "json", "--log-level", "warn"}, files...)...)
	if err != nil {
		t.Fatalf("detect %v: %v\n%s", files, err, out)
	}
	var keys []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "detect: ") {
			continue // the summary on stderr (run merges the two)
		}
		var f struct {
			Detector, Severity, Namespace, Workload, Peer, Status string
			Start, End                                            time.Time
			Evidence                                              struct{ Flows int64 }
		}
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("bad detect output %q: %v", sc.Text(), err)
		}
		keys = append(keys, fmt.Sprintf("%s %s %s/%s→%s %s–%s %s %d flows", f.Detector, f.Severity, f.Namespace, f.Workload, f.Peer,
			f.Start.UTC().Format(time.RFC3339), f.End.UTC().Format(time.RFC3339), f.Status, f.Evidence.Flows))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Over everything make run replays at once (the Hubble samples and every
// incident scenario: recordings of the same hour, named one after the
// other), detect finds what each file finds alone, no more and no less:
// each scenario's finding at its own time and with its own flow count,
// not in the previous file's last window.
func TestDetectOverlappingFilesFindWhatEachFindsAlone(t *testing.T) {
	files := makeRunFiles(t)
	var union []string
	for _, f := range files {
		union = append(union, detectKeys(t, f)...)
	}
	slices.Sort(union)
	union = slices.Compact(union)
	got := detectKeys(t, files...)
	if len(union) < 5 {
		t.Fatalf("the files alone find only %v", union)
	}
	if !slices.Equal(got, union) {
		t.Errorf("detect over make run's %d files:\n%s\neach file alone:\n%s", len(files), strings.Join(got, "\n"), strings.Join(union, "\n"))
	}
	// The same files named in the reverse order find the same.
	slices.Reverse(files)
	if rev := detectKeys(t, files...); !slices.Equal(rev, union) {
		t.Errorf("detect over the files in reverse order:\n%s\nwant:\n%s", strings.Join(rev, "\n"), strings.Join(union, "\n"))
	}
}

// A recording split by the exporter's rotation (hubble.log the newest
// part, hubble.log.1, hubble.log.2 the older ones, as a shell glob names
// them) is one stream: cut inside the scenario's finding windows, its
// parts find exactly what the unsplit file finds, in whatever order they
// are named.
func TestDetectRotatedPartsAreOneRecording(t *testing.T) {
	for _, tc := range []struct {
		name string
		cuts []time.Duration // after scenarioStart
	}{
		// cross-namespace-denial and denial-rate 09:35–09:40,
		// egress-denial-spike 09:35–09:37.
		{"cross-namespace-scan", []time.Duration{36*time.Minute + 30*time.Second}},
		// egress-spike 09:20–09:40, over several windows.
		{"slow-exfiltration", []time.Duration{25 * time.Minute, 30*time.Minute + 20*time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			whole := filepath.Join(scenarioDir, tc.name+".jsonl.gz")
			want := detectKeys(t, whole)
			if len(want) == 0 {
				t.Fatalf("%s: no finding", whole)
			}
			parts := splitRecording(t, readScenario(t, whole), tc.cuts)
			dir := t.TempDir()
			var names []string // hubble.log, hubble.log.1, ...: newest first
			for i := range parts {
				name := filepath.Join(dir, "hubble.log")
				if n := len(parts) - 1 - i; n > 0 {
					name += fmt.Sprintf(".%d", n)
				}
				if err := os.WriteFile(name, parts[i], 0o600); err != nil {
					t.Fatal(err)
				}
				names = append(names, name)
			}
			slices.Sort(names) // the glob's order: hubble.log first
			for _, order := range [][]string{names, slices.Concat(names[1:], names[:1])} {
				if got := detectKeys(t, order...); !slices.Equal(got, want) {
					t.Errorf("detect %v:\n%s\nthe unsplit file:\n%s", order, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
		})
	}
}

// splitRecording cuts a scenario's Hubble lines (in time order) at each
// cut after scenarioStart, and checks each part has flows.
func splitRecording(t *testing.T, lines []byte, cuts []time.Duration) [][]byte {
	t.Helper()
	parts := make([][]byte, len(cuts)+1)
	for line := range bytes.Lines(lines) {
		var rec struct{ Time time.Time }
		if err := json.Unmarshal(line, &rec); err != nil || rec.Time.IsZero() {
			t.Fatalf("line %q: no time (%v)", line, err)
		}
		i := 0
		for i < len(cuts) && !rec.Time.Before(scenarioStart.Add(cuts[i])) {
			i++
		}
		parts[i] = append(parts[i], line...)
	}
	for i, p := range parts {
		if len(p) == 0 {
			t.Fatalf("part %d is empty", i)
		}
	}
	return parts
}

// recommend reads rotated parts as detect does: the slow exfiltration,
// cut 30 s into its spike and named newest first, is held back as from
// the unsplit file (read newest first, each part's detectors of its own
// find no spike, and the exfiltration was allowed).
func TestRecommendHoldsBackOverRotatedParts(t *testing.T) {
	whole := filepath.Join(scenarioDir, "slow-exfiltration.jsonl.gz")
	dir := t.TempDir()
	parts := splitRecording(t, readScenario(t, whole), []time.Duration{20*time.Minute + 30*time.Second})
	newest, older := filepath.Join(dir, "hubble.log"), filepath.Join(dir, "hubble.log.1")
	for p, b := range map[string][]byte{older: parts[0], newest: parts[1]} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	heldBack := func(files ...string) []string {
		out, err := run(t, append([]string{"recommend", "--out", t.TempDir(), "-o", "json", "--log-level", "warn"}, files...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var sum recommendSummary
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var held []string
		for _, h := range sum.HeldBack {
			held = append(held, h.From+" → "+h.To+" "+h.Port)
		}
		slices.Sort(held)
		return held
	}
	want := heldBack(whole)
	if !slices.Equal(want, []string{"bookinfo/ratings-v1 → 198.51.100.7 TCP/443"}) {
		t.Fatalf("the unsplit file holds back %v", want)
	}
	if got := heldBack(newest, older); !slices.Equal(got, want) {
		t.Errorf("the rotated parts hold back %v, want %v", got, want)
	}
}
