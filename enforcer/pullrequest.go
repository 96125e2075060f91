package enforcer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// PolicyDir is where policies go inside the repository.
const PolicyDir = "policies"

// PullRequest describes a policy change delivered as a git branch.
type PullRequest struct {
	Repo   string // path of a git working copy
	Branch string // new branch
	Title  string
	// Author of the commit.
	AuthorName, AuthorEmail string
	// Now stamps the commit (default time.Now).
	Now time.Time
	// FlowsSQL renders the flows behind an allow as a query for the PR
	// body (cmd passes the storage package's); nil leaves it out.
	FlowsSQL func(sel schema.FlowSelector, columns string) string
}

// PRResult is what Deliver did.
type PRResult struct {
	Commit  string
	Base    string
	Files   []string // written, relative to the repository
	Removed []string
	Body    string
}

// Deliver writes the policies into policies/<namespace>/<workload>.yaml on
// a new branch from the current HEAD, removes policies flowwarden generated
// earlier that are no longer wanted, and commits. The working copy is left
// on the new branch. The PR body (Markdown) is returned, not committed.
func Deliver(pr PullRequest, res *Result, prefix string) (*PRResult, error) {
	if pr.Title == "" {
		pr.Title = "flowwarden: least-privilege network policies"
	}
	write := func(wt *git.Worktree, out *PRResult) error {
		dir := filepath.Join(pr.Repo, PolicyDir)
		old, _ := generatedFiles(dir)
		paths, err := WriteDir(dir, res.Policies, prefix)
		if err != nil {
			return err
		}
		keep := map[string]bool{}
		for _, p := range paths {
			rel := filepath.ToSlash(filepath.Join(PolicyDir, p))
			keep[rel] = true
			out.Files = append(out.Files, rel)
			if _, err := wt.Add(rel); err != nil {
				return fmt.Errorf("git add %s: %w", rel, err)
			}
		}
		for _, rel := range old {
			if !keep[rel] {
				if _, err := wt.Remove(rel); err != nil {
					return fmt.Errorf("git rm %s: %w", rel, err)
				}
				out.Removed = append(out.Removed, rel)
			}
		}
		return nil
	}
	out, err := commitOnBranch(&pr, write, func(out *PRResult) string {
		return fmt.Sprintf("%s\n\n%d policies written, %d removed, from %d observed allows.\nGenerated and proven against the observed traffic by flowwarden.\n",
			pr.Title, len(out.Files), len(out.Removed), len(res.Evidence))
	})
	if err != nil {
		return nil, err
	}
	out.Body = PRBody(pr.Title, res, out, pr.FlowsSQL)
	return out, nil
}

// DeliverFiles commits files (path relative to the repository → content)
// on a new branch from the current HEAD, with the commit message summary
// under the title; the caller writes the PR body.
func DeliverFiles(pr PullRequest, files map[string][]byte, summary string) (*PRResult, error) {
	if pr.Title == "" {
		pr.Title = "flowwarden: host firewall"
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	write := func(wt *git.Worktree, out *PRResult) error {
		for _, rel := range names {
			if filepath.IsAbs(rel) || strings.HasPrefix(filepath.Clean(rel), "..") {
				return fmt.Errorf("pull request: %s is not inside the repository", rel)
			}
			path := filepath.Join(pr.Repo, rel)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, files[rel], 0o644); err != nil {
				return err
			}
			if _, err := wt.Add(filepath.ToSlash(rel)); err != nil {
				return fmt.Errorf("git add %s: %w", rel, err)
			}
			out.Files = append(out.Files, filepath.ToSlash(rel))
		}
		return nil
	}
	return commitOnBranch(&pr, write, func(*PRResult) string { return pr.Title + "\n\n" + summary + "\n" })
}

// commitOnBranch creates pr.Branch from HEAD in a clean working copy, lets
// write change it, and commits with the message message returns.
func commitOnBranch(pr *PullRequest, write func(*git.Worktree, *PRResult) error, message func(*PRResult) string) (*PRResult, error) {
	if pr.Branch == "" {
		return nil, errors.New("pull request: a branch name is required")
	}
	repo, err := git.PlainOpen(pr.Repo)
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", pr.Repo, err)
	}
	head, err := repo.Head()
	if err != nil {
		return nil, fmt.Errorf("repository %s has no HEAD commit: %w", pr.Repo, err)
	}
	branch := plumbing.NewBranchReferenceName(pr.Branch)
	if _, err := repo.Reference(branch, false); err == nil {
		return nil, fmt.Errorf("branch %s already exists", pr.Branch)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	if st, err := wt.Status(); err == nil && !st.IsClean() {
		return nil, fmt.Errorf("working copy %s has uncommitted changes", pr.Repo)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Branch: branch, Create: true, Hash: head.Hash()}); err != nil {
		return nil, fmt.Errorf("create branch %s: %w", pr.Branch, err)
	}
	out := &PRResult{Base: head.Name().Short()}
	if err := write(wt, out); err != nil {
		return nil, err
	}
	if pr.AuthorName == "" {
		pr.AuthorName, pr.AuthorEmail = "flowwarden", "flowwarden@localhost"
	}
	if pr.Now.IsZero() {
		pr.Now = time.Now()
	}
	sig := &object.Signature{Name: pr.AuthorName, Email: pr.AuthorEmail, When: pr.Now}
	hash, err := wt.Commit(message(out), &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	out.Commit = hash.String()
	return out, nil
}

// generatedFiles lists the policy files flowwarden wrote before (they carry
// its managed-by label), relative to the repository.
func generatedFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte("app.kubernetes.io/managed-by: flowwarden")) {
			rel, _ := filepath.Rel(filepath.Dir(dir), path)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// PRBody renders the pull request description: what changes, and the
// evidence behind every allow, with a query to see the flows.
func PRBody(title string, res *Result, pr *PRResult, flowsSQL func(schema.FlowSelector, string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", title)
	held := res.HeldBack()
	if len(held) == 0 {
		fmt.Fprintf(&b, "flowwarden generated these NetworkPolicies from observed traffic and checked them with its policy evaluator: every observed forwarded flow stays allowed, except the edges listed under *Left out*.\n\n")
	} else {
		fmt.Fprintf(&b, "flowwarden generated these NetworkPolicies from observed traffic and checked them with its policy evaluator: every observed forwarded flow stays allowed, except the edges listed under *Held back* and *Left out*.\n\n")
		fmt.Fprintf(&b, "### Held back: evidence of an attack\n\n%d observed edges are **not allowed** because flowwarden's detectors flagged them over the same traffic: the policies deny them (checked with the evaluator). Allow one only once the finding is explained.\n\n", len(held))
		fmt.Fprintf(&b, "| edge | flows | detector | severity | subject | finding's flows | finding's window | finding |\n|---|---|---|---|---|---|---|---|\n")
		for _, s := range held {
			for _, f := range s.Flags {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %d | %s to %s | `%s` |\n", EdgeKey(s.Edge), s.Stats.Flows, f.Detector, f.Severity, f.Subject, f.Flows,
					f.Start.Format(time.RFC3339), f.End.Format(time.RFC3339), f.ID)
			}
		}
		b.WriteString("\n")
	}
	if br := res.BlastRadius; br != nil && len(br.Rows) > 0 {
		fmt.Fprintf(&b, "### Blast radius\n\nThe workloads an attacker holding one workload could reach, directly or by pivoting, on any port: **%d → %d** summed over %d workloads, **%s** against the policies in force (with none in force, every pod reaches every other).\n\n",
			br.Before, br.After, len(br.Rows), ChangeWords(br.ReductionPercent()))
		fmt.Fprintf(&b, "| workload | before | after | of |\n|---|---|---|---|\n")
		for i, r := range br.Rows {
			if i == 20 {
				fmt.Fprintf(&b, "| … %d more | | | |\n", len(br.Rows)-20)
				break
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", r.Workload, r.Before, r.After, r.Total)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "### What changes\n\n")
	nsPolicies := map[string][]networkingv1.NetworkPolicy{}
	for _, np := range res.Policies {
		nsPolicies[np.Namespace] = append(nsPolicies[np.Namespace], np)
	}
	for _, ns := range sortedKeys(nsPolicies) {
		fmt.Fprintf(&b, "- namespace `%s`: default deny of ingress and egress (DNS allowed), %d workload policies\n", ns, len(nsPolicies[ns])-1)
	}
	for _, f := range pr.Files {
		fmt.Fprintf(&b, "  - `%s`\n", f)
	}
	for _, f := range pr.Removed {
		fmt.Fprintf(&b, "  - removed `%s` (no longer observed)\n", f)
	}
	fmt.Fprintf(&b, "\n### Evidence per allow\n\n| policy | direction | peer | port | flows | first seen | last seen |\n|---|---|---|---|---|---|---|\n")
	ev := append([]RuleEvidence(nil), res.Evidence...)
	sort.Slice(ev, func(i, j int) bool {
		return ev[i].Policy+ev[i].Direction+ev[i].Peer+ev[i].Port < ev[j].Policy+ev[j].Direction+ev[j].Peer+ev[j].Port
	})
	for _, e := range ev {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s | %s |\n", e.Policy, e.Direction, e.Peer, e.Port, e.Stats.Flows,
			e.Stats.First.UTC().Format(time.RFC3339), e.Stats.Last.UTC().Format(time.RFC3339))
	}
	if len(ev) > 0 && flowsSQL != nil {
		e := ev[0]
		ns, name, _ := strings.Cut(e.Policy, "/")
		sel := schema.FlowSelector{DstPort: portNumber(e.Port), Replies: schema.Requests(), NewestFirst: true, Limit: 50}
		side := schema.EndpointSelector{Namespace: ns, Workload: strings.TrimPrefix(name, "flowwarden-")}
		if e.Direction == "ingress" {
			sel.Dst = side
		} else {
			sel.Src = side
		}
		fmt.Fprintf(&b, "\nTo see the flows behind an allow, for example the first one:\n\n```sql\n%s\n```\n",
			flowsSQL(sel, "time, src_pod, dst_namespace, dst_workload, dst_addr, dst_port, protocol, verdict"))
	}
	if len(res.Skipped) > len(held) {
		fmt.Fprintf(&b, "\n### Left out\n\nObserved, but not allowed by these policies:\n\n")
		for _, s := range res.Skipped {
			if len(s.Flags) == 0 {
				fmt.Fprintf(&b, "- %s (%d flows): %s\n", EdgeKey(s.Edge), s.Stats.Flows, s.Reason)
			}
		}
	}
	return b.String()
}

// portNumber is the number of a "TCP/9080" port (0, any port, when it
// has none).
func portNumber(p string) uint16 {
	_, n, _ := strings.Cut(p, "/")
	v, _ := strconv.ParseUint(n, 10, 16)
	return uint16(v)
}

// GitHub opens the pull request on GitHub after pushing the branch.
type GitHub struct {
	// Repo is "owner/name".
	Repo string
	// Token authenticates the push and the API call; it never appears in
	// errors or logs.
	Token string
	// API is the REST API base (default https://api.github.com).
	API string
	// Remote is the git remote to push to (default "origin").
	Remote string
	Client *http.Client
}

// Open pushes the branch and creates the pull request; it returns its URL.
func (gh GitHub) Open(ctx context.Context, repoPath, branch, base, title, body string) (string, error) {
	if gh.Repo == "" || !strings.Contains(gh.Repo, "/") {
		return "", fmt.Errorf("github: %q is not owner/name", gh.Repo)
	}
	if gh.API == "" {
		gh.API = "https://api.github.com"
	}
	if gh.Remote == "" {
		gh.Remote = "origin"
	}
	if gh.Client == nil {
		gh.Client = &http.Client{Timeout: 30 * time.Second}
	}
	repo, err := git.PlainOpen(repoPath)
	if err != nil {
		return "", err
	}
	ref := config.RefSpec("refs/heads/" + branch + ":refs/heads/" + branch)
	push := &git.PushOptions{RemoteName: gh.Remote, RefSpecs: []config.RefSpec{ref}}
	if gh.Token != "" {
		push.Auth = &githttp.BasicAuth{Username: "x-access-token", Password: gh.Token}
	}
	if err := repo.PushContext(ctx, push); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", fmt.Errorf("push %s to %s: %s", branch, gh.Remote, redact(err.Error(), gh.Token))
	}
	payload, _ := json.Marshal(map[string]any{"title": title, "head": branch, "base": base, "body": body})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(gh.API, "/")+"/repos/"+gh.Repo+"/pulls", bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("Content-Type", "application/json")
	if gh.Token != "" {
		req.Header.Set("Authorization", "Bearer "+gh.Token)
	}
	resp, err := gh.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("github: %s", redact(err.Error(), gh.Token))
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("github: creating the pull request: %s: %s", resp.Status, redact(string(respBody), gh.Token))
	}
	var created struct {
		HTMLURL string `json:"html_url"`
	}
	_ = json.Unmarshal(respBody, &created)
	return created.HTMLURL, nil
}

func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "xxxxx")
}
