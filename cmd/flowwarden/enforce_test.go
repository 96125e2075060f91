package main

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi/kubeapitest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func sampleArgs() []string {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	var args []string
	for _, f := range files {
		args = append(args, "--hubble-file", f)
	}
	return args
}

func initRepo(t *testing.T) (string, *git.Repository) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("cluster config\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, _ := repo.Worktree()
	_, _ = wt.Add("README.md")
	sig := &object.Signature{Name: "ops", Email: "ops@example.com", When: time.Now()}
	if _, err := wt.Commit("initial", &git.CommitOptions{Author: sig}); err != nil {
		t.Fatal(err)
	}
	return dir, repo
}

// TestEnforceCreatesPolicyBranch checks the branch, its files and commit,
// and the pull request opened against a stand-in GitHub API.
func TestEnforceCreatesPolicyBranch(t *testing.T) {
	dir, repo := initRepo(t)
	head, _ := repo.Head()
	// A bare repository stands in for GitHub's git remote.
	remote := t.TempDir()
	if _, err := git.PlainInit(remote, true); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{remote}}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		auth string
		body map[string]string
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/repos/acme/cluster/pulls" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		got.auth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got.body)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"html_url":"https://github.example/acme/cluster/pull/7"}`))
	}))
	defer api.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "ghp_testtoken_do_not_leak"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := filepath.Join(t.TempDir(), "body.md")
	args := append([]string{"enforce", "--repo", dir, "--branch", "flowwarden/policies", "--pr-body", body,
		"--github", "acme/cluster", "--github-token-file", tokenFile, "--github-api", api.URL, "--log-level", "warn"}, sampleArgs()...)
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("enforce: %v\n%s", err, out)
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName("flowwarden/policies"), true)
	if err != nil {
		t.Fatal(err)
	}
	commit, _ := repo.CommitObject(ref.Hash())
	if len(commit.ParentHashes) != 1 || commit.ParentHashes[0] != head.Hash() {
		t.Fatalf("branch is not one commit on top of the base")
	}
	if !strings.HasPrefix(commit.Message, "flowwarden: least-privilege network policies") {
		t.Errorf("commit message %q", commit.Message)
	}
	tree, _ := commit.Tree()
	var files []string
	_ = tree.Files().ForEach(func(f *object.File) error { files = append(files, f.Name); return nil })
	sort.Strings(files)
	for _, want := range []string{"README.md", "policies/bookinfo/default-deny.yaml", "policies/bookinfo/productpage-v1.yaml", "policies/istio-system/prometheus.yaml"} {
		if i := sort.SearchStrings(files, want); i == len(files) || files[i] != want {
			t.Errorf("commit lacks %s (has %v)", want, files)
		}
	}
	// Every committed policy parses and is a NetworkPolicy flowwarden manages.
	f, _ := tree.File("policies/bookinfo/productpage-v1.yaml")
	content, _ := f.Contents()
	nps, err := enforcer.ParsePolicies([]byte(content))
	if err != nil || len(nps) != 1 || nps[0].Labels["app.kubernetes.io/managed-by"] != "flowwarden" {
		t.Fatalf("committed policy: %v %+v", err, nps)
	}
	md, _ := os.ReadFile(body)
	for _, want := range []string{"### What changes", "### Evidence per allow", "| bookinfo/flowwarden-productpage-v1 |", "```sql"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("PR body lacks %q", want)
		}
	}
	if got.auth != "Bearer "+token || got.body["head"] != "flowwarden/policies" || got.body["base"] != "master" || got.body["body"] != string(md) {
		t.Errorf("pull request request: auth set=%v head=%v base=%v", got.auth != "", got.body["head"], got.body["base"])
	}
	if strings.Contains(string(md), token) || strings.Contains(out, token) {
		t.Error("the token leaked into the PR body or output")
	}
	// The branch reached the remote.
	bare, _ := git.PlainOpen(remote)
	if _, err := bare.Reference(plumbing.NewBranchReferenceName("flowwarden/policies"), true); err != nil {
		t.Errorf("branch not pushed: %v", err)
	}
}

// TestPoliciesInForceFromTheCluster: recommend --current and report
// --policies read the policies in force from the API server ("cluster",
// through --kubeconfig) and say exactly what they say from the directory.
func TestPoliciesInForceFromTheCluster(t *testing.T) {
	const dir = "../../testdata/netpol/current"
	nps, err := enforcer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	api := kubeapitest.Start(t, nps, 1)
	for _, c := range []struct{ cmd, flag string }{{"recommend", "--current"}, {"report", "--policies"}} {
		outputs := map[string]string{}
		for _, spec := range []string{dir, "cluster"} {
			out := t.TempDir()
			args := append([]string{c.cmd, "--out", out, c.flag, spec, "--kubeconfig", api.Kubeconfig, "--log-level", "warn"}, sampleArgs()...)
			text, err := run(t, args...)
			if err != nil {
				t.Fatalf("%s %s %s: %v\n%s", c.cmd, c.flag, spec, err, text)
			}
			if c.cmd == "report" {
				md, _ := os.ReadFile(filepath.Join(out, "report.md"))
				text = string(md)
				_, text, _ = strings.Cut(text, "\n\n") // the heading line carries the generation time
				text = regexpGenerated.ReplaceAllString(text, "Generated …")
			}
			outputs[spec] = strings.ReplaceAll(strings.ReplaceAll(text, out, "OUT"), dir, "SOURCE")
			outputs[spec] = strings.ReplaceAll(outputs[spec], "cluster", "SOURCE")
		}
		if outputs[dir] != outputs["cluster"] {
			t.Errorf("%s from the cluster differs from the directory:\n%s\n---\n%s", c.cmd, outputs["cluster"], outputs[dir])
		}
		if !strings.Contains(outputs[dir], "unused") {
			t.Errorf("%s with the bookinfo policies in force shows no unused rule:\n%s", c.cmd, outputs[dir])
		}
	}
	// report --policies also asks for the Cilium policies, the
	// AuthorizationPolicies and Istio's PeerAuthentications, v1 then v1beta1
	// (this API server has none of these CRDs: 404, not an error);
	// recommend --current does not.
	requests, _ := api.Requests()
	var npLists, ciliumLists, istioLists, paLists int
	for _, r := range requests {
		switch {
		case strings.HasPrefix(r, "GET /apis/networking.k8s.io/v1/networkpolicies?"):
			npLists++
		case strings.HasPrefix(r, "GET "+kubeapitest.CNPPath+"?"), strings.HasPrefix(r, "GET "+kubeapitest.CCNPPath+"?"):
			ciliumLists++
		case strings.HasPrefix(r, "GET "+kubeapitest.AuthzPath+"?"):
			istioLists++
		case strings.HasPrefix(r, "GET /apis/security.istio.io/") && strings.Contains(r, "/peerauthentications?"):
			paLists++
		}
	}
	if npLists != 2*len(nps) || ciliumLists != 2 || istioLists != 1 || paLists != 2 || len(requests) != npLists+ciliumLists+istioLists+paLists {
		t.Errorf("%d NetworkPolicy list requests for %d policies read twice, one per page; %d Cilium lists, want 2; %d AuthorizationPolicy lists, want 1; %d PeerAuthentication lists, want 2: %v",
			npLists, len(nps), ciliumLists, istioLists, paLists, requests)
	}
}

// regexpGenerated masks the generation time, in RFC 3339 (report.md) or
// "2006-01-02 15:04:05" (report.html).
var regexpGenerated = regexp.MustCompile(`(Generated |"generated": ")[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+Z?`)

// TestStoredHistoryMakesTheSamePolicies: recommend and report over the
// stored flows (grouped by ClickHouse) write what they write from the
// same flows in a file.
func TestStoredHistoryMakesTheSamePolicies(t *testing.T) {
	dsn, _ := chtest.Database(t)
	file, _ := retimedSamples(t)
	if out, err := run(t, "ingest", "--clickhouse", dsn, "--hubble-file", file, "--log-level", "warn"); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	dirs := map[string]string{}
	for _, src := range [][]string{{"--hubble-file", file}, {"--since", "1h", "--clickhouse", dsn}} {
		dir := t.TempDir()
		dirs[src[0]] = dir
		if out, err := run(t, append([]string{"recommend", "--out", filepath.Join(dir, "policies"), "--log-level", "warn"}, src...)...); err != nil {
			t.Fatalf("recommend %v: %v\n%s", src, err, out)
		}
		if out, err := run(t, append([]string{"report", "--out", filepath.Join(dir, "report"), "--policies", "../../testdata/netpol/current", "--log-level", "warn"}, src...)...); err != nil {
			t.Fatalf("report %v: %v\n%s", src, err, out)
		}
	}
	read := func(dir string) map[string]string {
		out := map[string]string{}
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				raw, _ := os.ReadFile(path)
				rel, _ := filepath.Rel(dir, path)
				out[rel] = regexpGenerated.ReplaceAllString(string(raw), "Generated …")
			}
			return nil
		})
		return out
	}
	fromFile, fromStore := read(dirs["--hubble-file"]), read(dirs["--since"])
	if len(fromFile) < 5 {
		t.Fatalf("only %d files written", len(fromFile))
	}
	for name, want := range fromFile {
		if fromStore[name] != want {
			t.Errorf("%s differs between the file and the stored history:\n%s\n---\n%s", name, fromStore[name], want)
		}
	}
	if len(fromStore) != len(fromFile) {
		t.Errorf("%d files from the store, %d from the file", len(fromStore), len(fromFile))
	}
}
