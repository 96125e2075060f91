package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/flowfile"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// flowSource is where the enforcer commands read observed traffic: files
// (arguments, told apart by content, or --hubble-file/--envoy-file), or the
// flows stored in ClickHouse over a window.
type flowSource struct {
	files fileArgs
	win   window
	// checked are the files, checked by check before anything starts.
	checked []flowfile.File
	// tee, when set, also receives every flow read from files, in the
	// same pass (the detectors, for recommend).
	tee ingest.Sink
	// strictMTLS are the namespaces plaintext-in-mesh holds to mutual TLS
	// when the detectors run over this traffic (recommend
	// --strict-mtls-namespace).
	strictMTLS []string
}

func (s *flowSource) flags(cmd *cobra.Command) {
	s.files.flags(cmd)
	s.win.register(cmd, "use the flows stored in ClickHouse")
}

// check takes the command's arguments as files and opens every file before
// the command starts anything.
func (s *flowSource) check(args []string) error {
	s.files.args = args
	switch {
	case s.files.given() && s.win.given():
		return errors.New("give either files (arguments, --hubble-file, --envoy-file) or --since, not both")
	case s.files.given():
		var err error
		s.checked, err = s.files.check()
		return err
	}
	return nil
}

// each calls fn for every observed flow.
func (s *flowSource) each(ctx context.Context, g *globals, fn func(*schema.Flow)) error {
	switch {
	case s.files.given() && s.win.given():
		return errors.New("give either files (arguments, --hubble-file, --envoy-file) or --since, not both")
	case s.files.given():
		if s.checked == nil {
			if err := s.check(s.files.args); err != nil {
				return err
			}
		}
		sink := ingest.SinkFunc(func(ctx context.Context, flows ...schema.Flow) error {
			if s.tee != nil {
				if err := s.tee.Write(ctx, flows...); err != nil {
					return err
				}
			}
			for i := range flows {
				fn(&flows[i])
			}
			return nil
		})
		identities := ingest.NewIdentityCache(time.Hour, 0)
		for _, f := range s.checked {
			if r, ok := s.tee.(interface{ NextRecording() }); ok {
				r.NextRecording()
			}
			var stats ingest.Stats
			if err := flowfile.Read(ctx, f, flowfile.Options{Workers: 1}, identities, sink, &stats); err != nil {
				return fmt.Errorf("%s: %w", f.Path, err)
			}
			if snap := stats.Snapshot(); snap.RejectedTotal() > 0 {
				g.summarize(fmt.Sprintf("%s: %s", f.Path, snap), "rejected lines", "file", f.Path, "summary", snap.String())
			}
		}
		return nil
	case s.win.given() || s.win.until != "":
		return s.readStored(ctx, g, func(conn driver.Conn, since, until time.Time, n *atomic.Int64) error {
			return clickhouse.EachFlow(ctx, conn, clickhouse.EndpointColumns, since, until, func(f *schema.Flow) {
				n.Add(1)
				fn(f)
			})
		})
	}
	return errors.New("no observed traffic: give files (arguments, --hubble-file, --envoy-file) or --since")
}

// eachGroup calls fn for the observed traffic with alike flows grouped: from
// files one flow at a time, from ClickHouse grouped by the database
// (clickhouse.EachFlowGroup), which is what makes months of flows cheap to
// turn into a graph.
func (s *flowSource) eachGroup(ctx context.Context, g *globals, fn func(f *schema.Flow, n uint64, first, last time.Time)) error {
	if s.files.given() || !s.win.given() {
		return s.each(ctx, g, func(f *schema.Flow) { fn(f, 1, f.Time, f.Time) })
	}
	return s.readStored(ctx, g, func(conn driver.Conn, since, until time.Time, n *atomic.Int64) error {
		return clickhouse.EachFlowGroup(ctx, conn, since, until, func(f *schema.Flow, flows uint64, first, last time.Time) {
			n.Add(int64(flows))
			fn(f, flows, first, last)
		})
	})
}

// readStored opens the storage and runs read over the window, logging the
// flows it counts in n every few seconds.
func (s *flowSource) readStored(ctx context.Context, g *globals, read func(conn driver.Conn, since, until time.Time, n *atomic.Int64) error) error {
	from, to, err := s.win.bounds(time.Now())
	if err != nil {
		return err
	}
	st, err := openStorage(ctx, g, true)
	if err != nil {
		return err
	}
	defer st.Close()
	var n atomic.Int64
	defer reportRead(g, "reading stored flows", &n, time.Now())()
	return read(st.Conn, from, to, &n)
}

func newRecommendCommand(g *globals) *cobra.Command {
	var (
		src          flowSource
		out          string
		current      string
		flavor       string
		cfg          = enforcer.DefaultConfig()
		host         hostFirewall
		output       outputFlag
		l7           bool
		l7cfg        = enforcer.DefaultL7Config()
		trustDomain  string
		allowFlagged bool
	)
	cmd := &cobra.Command{
		Use:   "recommend (--since D|TIME [--until D|TIME] | FILE... | --hubble-file F...) --out DIR",
		Short: "Write least-privilege NetworkPolicies for the observed traffic, proven against it",
		Long: `Writes a default deny per namespace and one policy per workload allowing
exactly the observed peers and ports, proven against the observed traffic by
flowwarden's policy evaluator before anything is written.

The detectors run over the same traffic first (files: in the same pass;
--since: every stored flow of the window, as detect --since), and the
observed edges that are evidence of a finding are held back: not allowed,
proven denied, and listed ("held back: FROM → TO PORT (N flows): evidence of
SEVERITY DETECTOR on SUBJECT ...") with the finding. Which edges: an
egress-spike's outside destinations that alone carried more than twice the
workload's usual egress during it; a beacon's peer; addresses named under a
dns-tunnel's domain (with --flavor cilium --l7, its names are also left
out of the DNS rules); the edges a lateral-scan or egress-denial-spike
workload opened for the first time during it. Other findings hold nothing
back (metadata access is never allowed anyway). Each file is a recording,
read in the order of their first flow (rotated parts go on in the same
detectors): one that goes back in time gets detectors of its own, as in
detect. --allow-flagged
learns from all traffic, as before. --flavor istio holds back the inbound
requests that are evidence of a finding (no ALLOW rule, proven denied,
listed "held back: CALLER → WORKLOAD PORT METHOD PATH ..."): those a
lateral-scan or egress-denial-spike caller sent on edges it opened during
the finding, and plaintext-in-mesh's plaintext callers (give the namespaces
that must be strict with --strict-mtls-namespace); egress findings (egress
spike, beacon, DNS tunnel) concern no inbound request and hold nothing back
there.`,
		Example: `  flowwarden recommend --since 30d --out ./policies
  flowwarden recommend flows.json istio-proxy.log --out ./policies --flavor cilium -o json
  flowwarden recommend --since 30d --out ./policies --current cluster
  flowwarden recommend --host --since 30d --out ./hosts
  flowwarden recommend testdata/scenarios/sudden-exfiltration.jsonl.gz --out ./policies --allow-flagged`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("give --out DIR")
			}
			if output.value != "table" && current != "" {
				return fmt.Errorf("-o %s: --current prints text only (-o table)", output.value)
			}
			if !host.enabled && flavor != "kubernetes" && flavor != "cilium" && flavor != "istio" {
				return fmt.Errorf("--flavor %q: want kubernetes, cilium or istio", flavor)
			}
			if !host.enabled && l7 && flavor != "cilium" {
				return errors.New("--l7 needs --flavor cilium")
			}
			// The flags are right: now every file is opened, before anything starts.
			if err := src.check(args); err != nil {
				return err
			}
			// The policies in force too, before anything is written.
			var inForce []networkingv1.NetworkPolicy
			if current != "" && !host.enabled && flavor != "istio" {
				var err error
				if inForce, err = loadPolicies(cmd.Context(), g, current); err != nil {
					return fmt.Errorf("--current: %w", err)
				}
			}
			host.output = &output
			if host.enabled {
				return host.recommend(cmd, g, &src, out)
			}
			if flavor == "istio" {
				return istioRecommend(cmd.Context(), g, &src, cmd.OutOrStdout(), &output, out, l7cfg, cfg.NamePrefix, trustDomain, allowFlagged)
			}
			res, graph, err := recommend(cmd.Context(), g, &src, &cfg, allowFlagged)
			if err != nil {
				return err
			}
			l7cfg.Flagged = cfg.Flagged // names under a dns-tunnel's domain are held back from the DNS rules
			var paths []string
			if flavor == "cilium" {
				cps := enforcer.ToCilium(res, graph)
				if l7 {
					notes := cmd.OutOrStdout()
					if output.value != "table" {
						notes = cmd.ErrOrStderr() // stdout is the JSON/YAML summary
					}
					if err := ciliumL7(cmd.Context(), g, &src, notes, cps, l7cfg, cfg.NamePrefix); err != nil {
						return err
					}
				}
				paths, err = enforcer.WriteCiliumDir(out, cps, cfg.NamePrefix)
			} else {
				paths, err = enforcer.WriteDir(out, res.Policies, cfg.NamePrefix)
			}
			if err != nil {
				return err
			}
			if err := enforcer.WriteLeftOut(out, res.Skipped); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output.value != "table" {
				br, err := enforcer.ComputeBlastRadius(nil, res.Policies, graph)
				if err != nil {
					return err
				}
				sum := recommendSummary{Out: out, Files: paths, Workloads: len(graph.Workloads), Edges: len(graph.Edges),
					DirectionUnknown: graph.DirectionUnknown(), LeftOut: []leftOutEdge{}, HeldBack: []leftOutEdge{}, Warnings: res.Warnings, BlastRadius: br.Summary()}
				for _, s := range res.Skipped {
					e := leftOutEdge{From: peerString(s.Edge.From), To: peerString(s.Edge.To),
						Port: fmt.Sprintf("%s/%d", s.Edge.Protocol, s.Edge.Port), Flows: s.Stats.Flows, Reason: s.Reason, Findings: s.Flags}
					if len(s.Flags) > 0 {
						sum.HeldBack = append(sum.HeldBack, e)
					} else {
						sum.LeftOut = append(sum.LeftOut, e)
					}
				}
				return output.print(w, sum, nil)
			}
			held := res.HeldBack()
			fmt.Fprintf(w, "%d policies for %d workloads written to %s (%d edges observed, %d left out on purpose)\n",
				len(paths), len(graph.Workloads), out, len(graph.Edges), len(res.Skipped)-len(held))
			if n := graph.DirectionUnknown(); n > 0 {
				fmt.Fprintf(w, "  direction unknown: %d flows taught nothing (no signal said which end opened the connection)\n", n)
			}
			for _, s := range res.Skipped {
				if len(s.Flags) == 0 {
					fmt.Fprintf(w, "  left out: %s → %s %s/%d: %s\n", peerString(s.Edge.From), peerString(s.Edge.To), s.Edge.Protocol, s.Edge.Port, s.Reason)
				}
			}
			if len(held) > 0 {
				fmt.Fprintf(w, "%d edges held back as evidence of the detectors' findings (not allowed; --allow-flagged allows them):\n", len(held))
				printHeldBack(w, res)
			}
			for _, warn := range res.Warnings {
				fmt.Fprintf(w, "  warning: %s\n", warn)
			}
			if current != "" {
				return printTightening(cmd.Context(), g, w, current, inForce, res, graph)
			}
			br, err := enforcer.ComputeBlastRadius(nil, res.Policies, graph)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s, against no policies in force\n", br.Summary())
			return nil
		},
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&out, "out", "", "directory for the policies (<namespace>/<workload>.yaml)")
	output.register(cmd, "table", "table", "json", "yaml")
	cmd.Flags().StringVar(&flavor, "flavor", "kubernetes", "kubernetes (NetworkPolicy), cilium (CiliumNetworkPolicy with toFQDNs for names seen in DNS; --l7 for HTTP/DNS rules) or istio (one ALLOW AuthorizationPolicy per workload from the sidecars' inbound access logs stored by serve --envoy-file, and PeerAuthentication STRICT where no plaintext caller was seen)")
	cmd.Flags().StringVar(&trustDomain, "istio-trust-domain", "cluster.local", "--flavor istio: the mesh trust domain of principals derived from service accounts")
	cmd.Flags().StringArrayVar(&src.strictMTLS, "strict-mtls-namespace", nil, "a namespace whose inbound requests must all use mutual TLS, for the detectors' plaintext-in-mesh (with --flavor istio its plaintext callers are held back; repeatable)")
	cmd.Flags().BoolVar(&l7, "l7", false, "--flavor cilium: HTTP rules (method, path) on ports whose every observed flow was HTTP seen by Cilium's proxy, DNS rules naming the names looked up; other ports stay L4 (listed)")
	cmd.Flags().IntVar(&l7cfg.PathFamily, "l7-path-family", l7cfg.PathFamily, "--l7: paths equal but for one segment seen with at least this many values become one rule with [^/]+ there (0: never)")
	cmd.Flags().StringVar(&current, "current", "", "the policies in force, a directory or \"cluster\" (the API server): report their unused rules and the semantic diff to the proposal")
	policyFlags(cmd.Flags(), &cfg)
	allowFlaggedFlag(cmd.Flags(), &allowFlagged)
	host.flags(cmd, false)
	return cmd
}

// recommend builds the graph, runs the detectors over the same traffic
// (unless allowFlagged) so that the edges they flag are held back, then
// generates the policies and proves them.
// cfg.Flagged is left holding the findings.
func recommend(ctx context.Context, g *globals, src *flowSource, cfg *enforcer.Config, allowFlagged bool) (*enforcer.Result, *enforcer.Graph, error) {
	graph := enforcer.NewGraph()
	err := learnFlagged(ctx, g, src, cfg, allowFlagged, func() error { return src.eachGroup(ctx, g, graph.AddGroup) })
	if err != nil {
		return nil, nil, err
	}
	if len(graph.Workloads) == 0 {
		return nil, nil, errors.New("no workloads in the observed traffic")
	}
	res, err := enforcer.Recommend(graph, *cfg)
	var proof *enforcer.ProofError
	if errors.As(err, &proof) {
		for _, v := range proof.Violations {
			g.log.Error("generated policies disagree with observed traffic", "from", peerString(v.Edge.From), "to", peerString(v.Edge.To),
				"port", v.Edge.Port, "protocol", v.Edge.Protocol, "reason", v.Decision.Reason)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return res, graph, nil
}

func peerString(p enforcer.Peer) string {
	switch p.Kind {
	case enforcer.PeerWorkload:
		return p.Workload
	default:
		if p.Name != "" {
			return p.Addr.String() + " (" + p.Name + ")"
		}
		return p.Addr.String()
	}
}

func newVerifyCommand(g *globals) *cobra.Command {
	var (
		src      flowSource
		policies string
		junit    string
		out      outputFlag
	)
	cmd := &cobra.Command{
		Use:   "verify --policies DIR|FILE|-|cluster (FILE... | --hubble-file F... | --since D|TIME [--until D|TIME])",
		Short: "Check NetworkPolicies against observed traffic: the CI gate for policy changes",
		Long: `Judges each observed flow (replies, flows of unknown direction and
local-node traffic excepted) by the NetworkPolicies in DIR (or those in force
in the cluster: --policies cluster) and reports those they would deny, with
the reason, then a summary on stderr.

CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies in DIR, FILE,
stdin or the cluster (cilium.io/v2, listed where Cilium's CRDs are installed;
listing needs RBAC list on both) are judged too, with Cilium's semantics, together with the
NetworkPolicies as Cilium enforces both: endpoint selectors (the policy's
namespace implied), default deny per direction once a rule with that
section selects a pod, entities, CIDRs with except (addresses outside the
cluster only), toFQDNs (against the DNS names Hubble gave the
destination), ports and port ranges, deny rules first. What they hold that
cannot be judged (toNodes/fromNodes, toGroups, toServices, CIDR groups,
named ports, host policies) is named in a warning. Their HTTP rules are
judged per observed request, as are Istio AuthorizationPolicies
(security.istio.io/v1), from DIR, FILE, stdin or the cluster (listed where
Istio's CRDs are installed; listing needs RBAC list on
authorizationpolicies): each request they would deny is printed
("L7 denied: ...") and makes the exit status 1.

Output (-o): json prints the denied flows as JSON lines; table and yaml print
them once all are judged; github prints one
GitHub Actions error annotation per observed edge that would lose access, on
the policy file and the line of the rules that deny it (the policy that
selects the pod, before a namespace's default deny). --junit FILE also writes
JUnit XML: one test case per observed edge, failing when it would lose
access, skipped when recommend left it out on purpose.

Exit status: 0 when no observed traffic loses access, 1 when a flow that was
forwarded would be denied (a regression), 2 when the check could not be
made (bad policies, no traffic source, storage unreachable), as kubectl diff.`,
		Example: `  # In CI, on every pull request that changes policies/:
  flowwarden verify --policies policies --since 30d --clickhouse "$CLICKHOUSE_DSN" -o github --junit verify.xml
  flowwarden verify --policies ./policies --hubble-file flows.json -o table
  kubectl get networkpolicies -A -o yaml | flowwarden verify --policies - --since 2026-11-01T00:00:00Z`,
		Annotations: map[string]string{errorExitAnnotation: "2"}, // flag errors too
		Args:        cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := src.check(args); err != nil {
				return err
			}
			nps, cnps, l7, err := loadPolicySet(cmd.Context(), g, policies)
			if err != nil {
				return fmt.Errorf("--policies: %w", err)
			}
			// What recommend left out on purpose, recorded next to the
			// policies it wrote (a directory; none for a file, stdin or cluster).
			leftOut := map[string]string{}
			if fi, err := os.Stat(policies); err == nil && fi.IsDir() {
				if leftOut, err = enforcer.LoadLeftOut(policies); err != nil {
					return err
				}
			}
			var sources map[string]enforcer.PolicySource
			if policies != fromCluster && policies != "-" {
				if sources, err = enforcer.LoadDirSources(policies); err != nil {
					return err
				}
			}
			v, err := enforcer.NewVerification(nps, sources, leftOut)
			if err != nil {
				return err
			}
			if len(cnps) > 0 {
				unsupported, err := v.SetCilium(cnps)
				if err != nil {
					return fmt.Errorf("--policies: %w", err)
				}
				for _, u := range unsupported {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: not judged: %s\n", u)
				}
			}
			// A first pass learns the ports each end listens on: it tells
			// who opened the flows no other signal does.
			if err := src.eachGroup(cmd.Context(), g, func(f *schema.Flow, _ uint64, _, _ time.Time) { v.Learn(f) }); err != nil {
				return err
			}
			// -o json streams one object per line; table and yaml print
			// the denied flows once all are judged.
			enc := json.NewEncoder(cmd.OutOrStdout())
			var collected []enforcer.DeniedFlow
			err = src.each(cmd.Context(), g, func(f *schema.Flow) {
				o, denied := v.Judge(f)
				if !denied {
					return
				}
				switch out.value {
				case "json":
					_ = enc.Encode(o)
				case "table", "yaml":
					collected = append(collected, o)
				}
			})
			if err != nil {
				return err
			}
			if out.value == "github" {
				if err := v.Report().WriteGitHub(cmd.OutOrStdout()); err != nil {
					return err
				}
			}
			if out.value == "table" || out.value == "yaml" {
				if collected == nil {
					collected = []enforcer.DeniedFlow{}
				}
				err := out.print(cmd.OutOrStdout(), collected, func(t *table) {
					t.header("TIME", "SOURCE", "DESTINATION", "PORT", "OBSERVED", "INTENDED", "REASON")
					for _, d := range collected {
						t.row(d.Time.UTC().Format(time.RFC3339), d.Source, d.Dest, fmt.Sprintf("%s/%d", d.Protocol, d.Port), d.Observed, orDash(d.Intended), d.Reason)
					}
				})
				if err != nil {
					return err
				}
			}
			if junit != "" {
				var b strings.Builder
				if err := v.Report().WriteJUnit(&b); err != nil {
					return err
				}
				if err := os.WriteFile(junit, []byte(b.String()), 0o644); err != nil {
					return fmt.Errorf("--junit: %w", err)
				}
			}
			verdict := v.Verdict()
			fmt.Fprintf(cmd.ErrOrStderr(), "%d policies; %d flows checked; %d would be denied: %d left out on purpose by recommend, %d forwarded when observed (regressions, on %d edges)\n",
				verdict.Policies, verdict.Checked, verdict.Denied, verdict.Intended, verdict.Regressions, verdict.RegressedEdges)
			if verdict.DirectionUnknown > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d flows not judged: direction unknown (no signal said which end opened the connection)\n", verdict.DirectionUnknown)
			}
			if verdict.Unjudged > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d flows not judged: a pod end's labels were unknown (Cilium gave only reserved labels)\n", verdict.Unjudged)
			}
			if err := verifyL7(cmd.Context(), g, &src, cmd.ErrOrStderr(), l7, v); err != nil {
				return err
			}
			if v.Verdict().Failed() {
				return exitCode(1)
			}
			return nil
		},
	}
	// A CI gate tells "traffic would lose access" (1) from "could not
	// check" (2).
	check := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := check(cmd, args)
		var ec exitCode
		if err != nil && !errors.As(err, &ec) {
			fmt.Fprintln(cmd.ErrOrStderr(), "flowwarden verify:", err)
			return exitCode(2)
		}
		return err
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&policies, "policies", "", "directory or file of NetworkPolicy and CiliumNetworkPolicy YAML (- is stdin), or \"cluster\" for the NetworkPolicies and Cilium policies in force (listed from the API server)")
	cmd.Flags().StringVar(&junit, "junit", "", "also write JUnit XML here (one test case per observed edge)")
	out.register(cmd, "json", "json", "github", "table", "yaml")
	_ = cmd.MarkFlagRequired("policies")
	return cmd
}

func newEnforceCommand(g *globals) *cobra.Command {
	var (
		src          flowSource
		cfg          = enforcer.DefaultConfig()
		pr           enforcer.PullRequest
		bodyFile     string
		gh           enforcer.GitHub
		tokenFile    string
		output       outputFlag
		host         hostFirewall
		nftFile      string
		current      string
		allowFlagged bool
	)
	cmd := &cobra.Command{
		Use:   "enforce (--repo PATH --branch NAME (--since D|TIME | FILE... | --hubble-file F...) | --host --since D|TIME [--apply | --repo PATH --branch NAME])",
		Short: "Deliver proven least-privilege policies as a pull request, or apply the node's host firewall",
		Example: `  flowwarden enforce --repo ./cluster-config --branch flowwarden/policies --since 30d
  flowwarden enforce --repo ./cluster-config --branch flowwarden/policies --since 30d --github acme/cluster-config -o json
  flowwarden enforce --host --since 30d --apply`,
		Long: `Generates the policies as recommend does, writes them to policies/<namespace>/<workload>.yaml
in a git working copy on a new branch, commits, and writes the pull request body
(Markdown with the evidence per allow, and a "Held back" table of the observed
edges the detectors flagged, each with its finding: as recommend, they are
not allowed unless --allow-flagged) to --pr-body or stdout. With --github
owner/repo it pushes the branch and opens the pull request through the GitHub
REST API, with the token from --github-token-file or $GITHUB_TOKEN.

With --host it builds the node's host firewall (table inet flowwarden) from the
inbound traffic conntrack saw over --since. With --repo and --branch it commits
it as hosts/host-<node>.nft with the evidence in the PR body; otherwise it
checks it in a scratch network namespace (the dry run) and prints it. With
--apply a guard process then replaces table inet flowwarden atomically through
netlink and waits --confirm-timeout for "yes" on stdin; without it (on ^C,
SIGTERM, SIGHUP, or this command being killed) the previous table is restored.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := src.check(args); err != nil {
				return err
			}
			if host.enabled && pr.Repo == "" {
				if gh.Repo != "" {
					return errors.New("--github needs --repo and --branch")
				}
				host.output = &output
				return host.enforce(cmd, g, &src, nftFile)
			}
			if pr.Repo == "" || pr.Branch == "" {
				return errors.New("give --repo and --branch")
			}
			if host.enabled && host.apply {
				return errors.New("--apply works on the node, --repo delivers a pull request: give one of them")
			}
			if gh.Repo != "" {
				switch {
				case tokenFile != "":
					b, err := os.ReadFile(tokenFile)
					if err != nil {
						return fmt.Errorf("--github-token-file: %w", err)
					}
					gh.Token = strings.TrimSpace(string(b))
				default:
					gh.Token = os.Getenv("GITHUB_TOKEN")
				}
			}
			var out *enforcer.PRResult
			if host.enabled {
				var err error
				if out, err = host.pullRequest(cmd.Context(), g, &src, pr); err != nil {
					return err
				}
			} else {
				res, graph, err := recommend(cmd.Context(), g, &src, &cfg, allowFlagged)
				if err != nil {
					return err
				}
				var inForce []networkingv1.NetworkPolicy
				if current != "" {
					if inForce, err = loadPolicies(cmd.Context(), g, current); err != nil {
						return fmt.Errorf("--current: %w", err)
					}
				}
				if res.BlastRadius, err = enforcer.ComputeBlastRadius(inForce, res.Policies, graph); err != nil {
					return err
				}
				pr.FlowsSQL = clickhouse.FlowsSQL
				if out, err = enforcer.Deliver(pr, res, cfg.NamePrefix); err != nil {
					return err
				}
			}
			if bodyFile != "" {
				if err := os.WriteFile(bodyFile, []byte(out.Body), 0o644); err != nil {
					return err
				}
			} else if output.value == "markdown" {
				fmt.Fprint(cmd.OutOrStdout(), out.Body)
			}
			g.log.Info("policy branch committed", "repo", pr.Repo, "branch", pr.Branch, "commit", out.Commit, "files", len(out.Files), "removed", len(out.Removed))
			var prURL string
			if gh.Repo != "" {
				title := pr.Title
				switch {
				case title != "":
				case host.enabled:
					title = "flowwarden: host firewall for " + host.ns.node
				default:
					title = "flowwarden: least-privilege network policies"
				}
				url, err := gh.Open(cmd.Context(), pr.Repo, pr.Branch, out.Base, title, out.Body)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "pull request:", url)
				prURL = url
			}
			if output.value != "markdown" {
				return output.print(cmd.OutOrStdout(), enforceSummary{Repo: pr.Repo, Branch: pr.Branch, Base: out.Base, Commit: out.Commit,
					Files: out.Files, Removed: out.Removed, PullRequest: prURL, Body: out.Body}, nil)
			}
			return nil
		},
	}
	src.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&pr.Repo, "repo", "", "git working copy to commit the policies into")
	f.StringVar(&pr.Branch, "branch", "", "new branch for the change")
	f.StringVar(&pr.Title, "title", "", "pull request title")
	f.StringVar(&bodyFile, "pr-body", "", "write the pull request body (Markdown) here instead of stdout")
	output.register(cmd, "markdown", "markdown", "json", "yaml")
	f.StringVar(&gh.Repo, "github", "", "owner/repo: push the branch and open the pull request on GitHub")
	f.StringVar(&tokenFile, "github-token-file", "", "file holding the GitHub token (default: $GITHUB_TOKEN)")
	f.StringVar(&gh.API, "github-api", "https://api.github.com", "GitHub REST API base URL")
	f.StringVar(&gh.Remote, "git-remote", "origin", "git remote to push the branch to")
	policyFlags(f, &cfg)
	host.flags(cmd, true)
	f.StringVar(&nftFile, "nft-file", "", "--host: also write the ruleset as an nft -f file here")
	f.StringVar(&current, "current", "", "the policies in force, a directory or \"cluster\": the PR body states the blast radius reduction against them (default: none in force)")
	allowFlaggedFlag(f, &allowFlagged)
	return cmd
}

func newReportCommand(g *globals) *cobra.Command {
	var (
		src          flowSource
		policies     string
		out          string
		output       outputFlag
		cfg          = enforcer.DefaultConfig()
		allowFlagged bool
	)
	cmd := &cobra.Command{
		Use:   "report (--since D|TIME [--until D|TIME] | FILE... | --hubble-file F...) --policies DIR --out DIR",
		Short: "Write the least-privilege report (Markdown, HTML, service-graph SVG)",
		Example: `  flowwarden report --since 90d --policies cluster --out ./report
  flowwarden report --since 2026-07-01 --until 2026-10-01 --policies ./policies --out ./q3 -o json`,
		Long: `Per namespace: the allowed-but-unused rules of the policies in force (the
least-privilege gap), top talkers, denied traffic and new edges, with a
service graph coloured by verdict; the blast radius of every workload (the
workloads it reaches directly or by pivoting, any port) under the policies
in force (none given: every pod reaches every other) and under the
recommended policies, with the cluster's reduction. The recommended
policies are recommend's: the edges the detectors flag are held back
(listed among the observed traffic they would deny, with the finding)
unless --allow-flagged. Writes report.md,
report.html (self-contained), service-graph.svg and report.json (every figure
of the report, "blast_radius" and "mtls_coverage" included) into --out.

mTLS coverage: per namespace that received inbound mesh requests (Envoy/Istio
sidecars' inbound access-log lines), the requests, the share secured by
mutual TLS, the PeerAuthentication in force (read from --policies DIR, FILE or
cluster) and the workload ports that received the most plaintext.

CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies among the
policies count in the rules in force and the unused rules (each allow rule
against the observed traffic, with Cilium's semantics, as verify judges
them); the blast radius and the summary's default-deny coverage and access
changes count NetworkPolicies only, and the report says so.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("give --out DIR")
			}
			if err := src.check(args); err != nil {
				return err
			}
			var nps []networkingv1.NetworkPolicy
			var cnps []enforcer.CiliumNetworkPolicy
			var l7 *enforcer.L7Policies
			if policies != "" {
				var err error
				if nps, cnps, l7, err = loadPolicySet(cmd.Context(), g, policies); err != nil {
					return fmt.Errorf("--policies: %w", err)
				}
			}
			b := enforcer.NewReportBuilder()
			b.Config = &cfg
			b.Cilium = cnps
			// The recommended policies hold back what the detectors flag, as
			// recommend's do; the mTLS coverage counts the same flows.
			var mesh analyze.MeshReport
			err := learnFlagged(cmd.Context(), g, &src, &cfg, allowFlagged, func() error {
				return src.eachGroup(cmd.Context(), g, func(f *schema.Flow, n uint64, first, last time.Time) {
					b.AddGroup(f, n, first, last)
					mesh.AddGroup(f, n)
				})
			})
			if err != nil {
				return err
			}
			meshPolicy, err := meshPolicyOf(cmd.Context(), g, policies)
			if err != nil {
				return fmt.Errorf("--policies: %w", err)
			}
			b.Mesh, b.MeshPolicies = mesh.Namespaces(meshPolicy, plaintextReceiversShown), meshPolicy != nil
			if src.win.given() {
				// The host firewalls' rules, from the counters serve --nftables stored.
				from, _, err := src.win.bounds(time.Now())
				if err != nil {
					return err
				}
				if err := addHostRules(cmd.Context(), g, b, from); err != nil {
					return err
				}
			}
			r, err := b.Build(nps, time.Now())
			if err != nil {
				return err
			}
			if err := r.WriteDir(out); err != nil {
				return err
			}
			for _, n := range r.NotJudged {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: not judged: %s\n", n)
			}
			if err := reportL7(cmd.Context(), g, &src, cmd.ErrOrStderr(), l7, out); err != nil {
				return err
			}
			unused := r.UnusedRules()
			held := 0
			if r.Summary != nil {
				for _, d := range r.Summary.WouldDeny {
					if len(d.Findings) > 0 {
						held++
					}
				}
			}
			if output.value != "table" {
				return output.print(cmd.OutOrStdout(), reportSummary{Out: out, ObservedFrom: r.From, ObservedTo: r.To, Namespaces: len(r.Namespaces), Hosts: len(r.Hosts), UnusedRules: unused,
					BlastRadiusBefore: r.BlastRadiusBefore, BlastRadiusAfter: r.BlastRadiusAfter, BlastRadiusReductionPercent: r.BlastRadiusReduction, HeldBack: held}, nil)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "report for %d namespaces and %d host firewalls written to %s (%d rules allowed but unused)\n", len(r.Namespaces), len(r.Hosts), out, unused)
			if len(r.BlastRadius) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "blast radius %d → %d with the recommended policies (%s)\n", r.BlastRadiusBefore, r.BlastRadiusAfter, enforcer.ChangeWords(r.BlastRadiusReduction))
			}
			if held > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d observed edges held back from the recommended policies as evidence of the detectors' findings (listed in report.md with the finding; --allow-flagged allows them)\n", held)
			}
			return nil
		},
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&policies, "policies", "", "the policies in force: a directory or file of NetworkPolicies and CiliumNetworkPolicies (- is stdin), or \"cluster\" to list them (NetworkPolicies, and Cilium's where its CRDs are installed) from the API server")
	cmd.Flags().StringVar(&out, "out", "", "directory for report.md, report.html, service-graph.svg and report.json")
	output.register(cmd, "table", "table", "json", "yaml")
	policyFlags(cmd.Flags(), &cfg) // the recommended policies of the blast radius are recommend's
	allowFlaggedFlag(cmd.Flags(), &allowFlagged)
	return cmd
}

// addHostRules reads the use of every counted host firewall rule.
func addHostRules(ctx context.Context, g *globals, b *enforcer.ReportBuilder, since time.Time) error {
	st, err := openStorage(ctx, g, true)
	if err != nil {
		return err
	}
	defer st.Close()
	usage, err := clickhouse.HostRuleUsage(ctx, st.Conn, since)
	if err != nil {
		return err
	}
	rules := make([]enforcer.HostRule, len(usage))
	for i, u := range usage {
		rules[i] = enforcer.HostRule{Node: u.Node, Rule: u.Comment, Handle: u.Handle, Packets: u.Packets}
	}
	b.AddHostRules(rules)
	return nil
}

// fromCluster is the policies-in-force argument that reads them from the
// Kubernetes API server instead of a directory (a directory of that name
// is ./cluster).
const fromCluster = "cluster"

// loadPolicies reads the NetworkPolicies in force: from the API server
// when spec is "cluster", else from the directory spec. Its users
// (recommend and enforce --current, serve's page) diff NetworkPolicies
// only, from a directory as from the cluster; verify and report judge the
// Cilium policies too (loadPolicySet).
func loadPolicies(ctx context.Context, g *globals, spec string) ([]networkingv1.NetworkPolicy, error) {
	switch spec {
	case "-":
		raw, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("policies from stdin: %w", err)
		}
		return enforcer.ParsePolicies(raw)
	case fromCluster:
	default:
		return enforcer.LoadDir(spec) // a directory or one file
	}
	cfg, err := kubeapi.Config(g.kubeconfig)
	if err != nil {
		return nil, err
	}
	nps, err := kubeapi.ListPolicies(ctx, cfg)
	if err != nil {
		return nil, err
	}
	g.log.Info("policies in force read from the cluster", "server", cfg.Host, "policies", len(nps))
	return nps, nil
}

// printTightening reports, for the policies in force, what they allow that
// nothing used, and how access changes with the proposed set
// (enforcer.Summarize, as the page and the report compute it).
func printTightening(ctx context.Context, g *globals, w io.Writer, current string, nps []networkingv1.NetworkPolicy, res *enforcer.Result, graph *enforcer.Graph) error {
	g.log.Info("semantic diff: judging access over equivalence classes of peers and ports", "workloads", len(graph.Workloads))
	start := time.Now()
	sum, err := enforcer.Summarize(ctx, graph, nps, res)
	if err != nil {
		return err
	}
	if sum.DiffError != "" {
		return ctx.Err() // interrupted: Summarize left the diff out
	}
	g.log.Info("semantic diff done", "losses", sum.Losses, "gains", sum.Gains, "peer_classes", sum.PeerClasses, "port_classes", sum.PortClasses, "took", time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(w, "%s, against the %d policies in %s\n", sum.BlastRadius.Summary(), len(nps), current)
	fmt.Fprintf(w, "\nleast-privilege gap of the %d policies in %s:\n", len(nps), current)
	for _, u := range sum.Unused {
		fmt.Fprintf(w, "  unused: %s %s rule %d: %s\n", u.Policy, u.Direction, u.Index+1, u.Rule)
	}
	// Observed traffic first, one line each; the rest as counts.
	for _, c := range sum.Observed {
		verb := "loses"
		if c.Gains {
			verb = "gains"
		}
		line := fmt.Sprintf("  %s → %s %s %s (observed flows: %d)", c.From, c.To, verb, c.Port, c.Observed)
		if c.LeftOut != "" {
			line += ": " + c.LeftOut
		}
		fmt.Fprintln(w, line)
	}
	for _, ns := range sum.UnobservedLossNamespaces() {
		fmt.Fprintf(w, "  namespace %s: %d pairs/ports nobody was seen using lose access\n", ns, sum.UnobservedLosses[ns])
	}
	fmt.Fprintf(w, "semantic diff: %d pairs/ports lose access (%d unobserved), %d gain it\n", sum.Losses, sum.UnobservedLossTotal(), sum.Gains)
	return nil
}

// recommendSummary is what recommend -o json|yaml prints.
type recommendSummary struct {
	Out              string        `json:"out"`
	Files            []string      `json:"files"`
	Workloads        int           `json:"workloads"`
	Edges            int           `json:"edges"`
	DirectionUnknown uint64        `json:"direction_unknown"`
	LeftOut          []leftOutEdge `json:"left_out"`
	HeldBack         []leftOutEdge `json:"held_back"`
	Warnings         []string      `json:"warnings"`
	BlastRadius      string        `json:"blast_radius"`
}

type leftOutEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Port string `json:"port"`
	// Request is the method and path of a held-back request (--flavor
	// istio), and whether it used mutual TLS.
	Request string `json:"request,omitempty"`
	Flows   uint64 `json:"flows"`
	Reason  string `json:"reason"`
	// Findings are those a held-back edge is evidence of.
	Findings []enforcer.Flag `json:"findings,omitempty"`
}

// reportSummary is what report -o json|yaml prints (report.json in --out
// holds every figure).
type reportSummary struct {
	Out                         string    `json:"out"`
	ObservedFrom                time.Time `json:"observed_from"`
	ObservedTo                  time.Time `json:"observed_to"`
	Namespaces                  int       `json:"namespaces"`
	Hosts                       int       `json:"host_firewalls"`
	UnusedRules                 int       `json:"unused_rules"`
	BlastRadiusBefore           int       `json:"blast_radius_before"`
	BlastRadiusAfter            int       `json:"blast_radius_after"`
	BlastRadiusReductionPercent float64   `json:"blast_radius_reduction_percent"`
	// HeldBack counts the observed edges the recommended policies hold
	// back as evidence of findings.
	HeldBack int `json:"held_back"`
}

// enforceSummary is what enforce -o json|yaml prints.
type enforceSummary struct {
	Repo        string   `json:"repo"`
	Branch      string   `json:"branch"`
	Base        string   `json:"base"`
	Commit      string   `json:"commit"`
	Files       []string `json:"files"`
	Removed     []string `json:"removed"`
	PullRequest string   `json:"pull_request,omitempty"`
	Body        string   `json:"body"`
}

// policyFlags registers the generator's flags, the same for recommend,
// enforce, report and serve's page, so all recommend the same policies from
// the same flows.
func policyFlags(f *pflag.FlagSet, cfg *enforcer.Config) {
	f.Uint64Var(&cfg.MinFlows, "min-flows", cfg.MinFlows, "flows an edge needs before it is allowed")
	f.IntVar(&cfg.MaxPrefixV4, "max-prefix-v4", cfg.MaxPrefixV4, "never aggregate IPv4 destinations wider than this prefix length")
	f.StringVar(&cfg.MonitoringNamespace, "monitoring-namespace", "", "namespace of the metrics scraper allowed into every workload")
	f.StringToStringVar(&cfg.MonitoringLabels, "monitoring-labels", nil, "pod labels of the metrics scraper (k=v,...)")
}
