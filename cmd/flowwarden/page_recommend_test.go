package main

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/webui"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// fileStore serves recorded flows to the page as storage would.
type fileStore struct{ flows []schema.Flow }

func (s fileStore) EachFlowGroup(_ context.Context, _, _ time.Time, fn func(f *schema.Flow, n uint64, first, last time.Time)) error {
	for i := range s.flows {
		fn(&s.flows[i], 1, s.flows[i].Time, s.flows[i].Time)
	}
	return nil
}

func (fileStore) RecentFindings(context.Context, int) ([]schema.FindingRecord, error) {
	return nil, nil
}

var pagePolicy = regexp.MustCompile(`(?s)<details><summary>([^<]*)</summary><pre>(apiVersion: networking.k8s.io/v1.*?)</pre></details>`)

// TestPageRecommendsWhatRecommendWrites: for the same flows and the same
// generator flags, serve's page shows byte for byte the policies recommend
// writes; with a --min-flows that drops edges, both change, alike.
func TestPageRecommendsWhatRecommendWrites(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	var flows []schema.Flow
	for _, f := range files {
		fs, err := hubble.ReadFlows(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, fs...)
	}
	var last time.Time
	for _, f := range flows {
		if f.Time.After(last) {
			last = f.Time
		}
	}
	results := map[string]map[string]string{}
	for _, flags := range [][]string{{}, {"--min-flows", "20"}} {
		// recommend, through the CLI.
		dir := t.TempDir()
		args := []string{"recommend", "--out", dir, "--log-level", "warn"}
		for _, f := range files {
			args = append(args, "--hubble-file", f)
		}
		if out, err := run(t, append(args, flags...)...); err != nil {
			t.Fatalf("recommend %v: %v\n%s", flags, err, out)
		}
		written := map[string]string{}
		yamls, _ := filepath.Glob(filepath.Join(dir, "*", "*.yaml"))
		for _, y := range yamls {
			b, err := os.ReadFile(y)
			if err != nil {
				t.Fatal(err)
			}
			nps, err := enforcer.ParsePolicies(b)
			if err != nil || len(nps) != 1 {
				t.Fatalf("%s: %d policies, %v", y, len(nps), err)
			}
			written[nps[0].Namespace+"/"+nps[0].Name] = string(b)
		}

		// The page, with serve's generator flags parsed from the same words.
		cfg := enforcer.DefaultConfig()
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		policyFlags(fs, &cfg)
		if err := fs.Parse(flags); err != nil {
			t.Fatal(err)
		}
		page := newPage(webuiConfig(last), cfg, false, fileStore{flows}, nil)
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		shown := map[string]string{}
		for _, m := range pagePolicy.FindAllStringSubmatch(string(body), -1) {
			shown[html.UnescapeString(m[1])] = html.UnescapeString(m[2])
		}
		if len(written) == 0 || len(shown) != len(written) {
			t.Fatalf("flags %v: recommend wrote %d policies, the page shows %d:\n%s", flags, len(written), len(shown), names(shown))
		}
		for name, y := range written {
			if shown[name] != y {
				t.Errorf("flags %v: %s differs:\nrecommend:\n%s\npage:\n%s", flags, name, y, shown[name])
			}
		}
		results[strings.Join(flags, " ")] = written
	}
	if same := equalMaps(results[""], results["--min-flows 20"]); same {
		t.Fatal("--min-flows 20 changed nothing: pick flows where it drops an edge")
	}
}

func webuiConfigWindow() time.Duration { return 100 * 365 * 24 * time.Hour }

func names(m map[string]string) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// webuiConfig is a page whose window holds every recorded flow.
func webuiConfig(last time.Time) webui.Config {
	return webui.Config{Now: func() time.Time { return last.Add(time.Second) }, Window: webuiConfigWindow()}
}

// TestReportRecommendsWhatRecommendWrites: the quarterly report's "after"
// blast radius is that of the policies recommend writes for the same flows
// and generator flags (generated and proven, not the defaults).
func TestReportRecommendsWhatRecommendWrites(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	after := regexp.MustCompile(`→ (\d+) workload pairs`)
	seen := map[string]bool{}
	for _, flags := range [][]string{{}, {"--min-flows", "20"}} {
		args := append([]string{"--log-level", "warn", "-o", "json"}, files...)
		args = append(args, flags...)
		out, err := run(t, append([]string{"recommend", "--out", t.TempDir()}, args...)...)
		if err != nil {
			t.Fatalf("recommend %v: %v\n%s", flags, err, out)
		}
		var rec struct {
			BlastRadius string `json:"blast_radius"`
		}
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("recommend -o json: %v\n%s", err, out)
		}
		m := after.FindStringSubmatch(rec.BlastRadius)
		if m == nil {
			t.Fatalf("recommend's blast radius %q names no count", rec.BlastRadius)
		}
		out, err = run(t, append([]string{"report", "--out", t.TempDir()}, args...)...)
		if err != nil {
			t.Fatalf("report %v: %v\n%s", flags, err, out)
		}
		var rep struct {
			After int `json:"blast_radius_after"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("report -o json: %v\n%s", err, out)
		}
		if strconv.Itoa(rep.After) != m[1] {
			t.Errorf("flags %v: report's blast radius after is %d, recommend's %s", flags, rep.After, m[1])
		}
		seen[m[1]] = true
	}
	if len(seen) != 2 {
		t.Fatal("--min-flows 20 changed nothing: pick flows where it drops an edge")
	}
}
