package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/schema"
)

// hostFirewall holds the flags of `recommend --host` and `enforce --host`.
type hostFirewall struct {
	enabled  bool
	flavor   string
	addrs    []string
	podCIDRs []string
	nodeCIDR []string
	cni      []string
	cfg      hostfw.Config
	ns       hostSources

	apply   bool
	timeout time.Duration
	// output is the command's -o (table: the text summary).
	output *outputFlag
}

func (h *hostFirewall) flags(cmd *cobra.Command, enforce bool) {
	h.cfg = hostfw.DefaultConfig()
	f := cmd.Flags()
	f.BoolVar(&h.enabled, "host", false, "the node's host firewall (nftables, from the inbound traffic conntrack saw) instead of NetworkPolicies")
	if !enforce {
		f.StringVar(&h.flavor, "host-flavor", "nft", "--host: the firewall to write for: nft (an nft -f file), ufw (a script of ufw commands), firewalld (a zone file and the firewall-cmd lines); the same rules in each")
	}
	f.StringArrayVar(&h.addrs, "node-address", nil, "--host: an address or prefix the node is reached on (repeatable; default: the flows serve --conntrack recorded as inbound, to the node's interface addresses of the time)")
	f.StringArrayVar(&h.podCIDRs, "pod-cidr", nil, "--host: the cluster's pod range, left to the CNI (repeatable)")
	f.StringArrayVar(&h.nodeCIDR, "node-cidr", nil, "--host: the range the cluster's nodes are in; the overlay's tunnel ports accept only it (repeatable; default: from anywhere)")
	f.StringSliceVar(&h.cni, "cni-interface", h.cfg.CNIInterfaces, "--host: interfaces whose traffic is the CNI's and left alone (trailing * matches a prefix)")
	f.IntVar(&h.cfg.CollapseHosts, "collapse-hosts", h.cfg.CollapseHosts, "--host: allow a whole /24 (IPv6 /64) once this many of its hosts used a port (0: never)")
	hostname, _ := os.Hostname()
	f.StringVar(&h.ns.node, "node", hostname, "--host: the node whose conntrack flows are used")
	f.StringVar(&h.ns.netns, "netns", "", "--host: the network namespace the node addresses are read from (and, with --apply, the rules applied in)")
	if enforce {
		f.BoolVar(&h.apply, "apply", false, "--host: apply the rules through netlink (dry run first; rolled back unless confirmed on stdin)")
		f.DurationVar(&h.timeout, "confirm-timeout", time.Minute, "--host --apply: time to confirm before the previous ruleset is restored")
	}
}

// build reads the conntrack flows and writes the ruleset.
func (h *hostFirewall) build(ctx context.Context, g *globals, src *flowSource) (*hostfw.Ruleset, error) {
	if src.files.given() {
		return nil, errors.New("--host needs the conntrack flows stored in ClickHouse: give --since, not --hubble-file")
	}
	if err := h.ns.open(); err != nil {
		return nil, err
	}
	cfg := h.cfg
	cfg.Node = h.ns.node
	cfg.CNIInterfaces = h.cni
	cfg.MinFlows = 1
	var err error
	if cfg.PodCIDRs, err = parsePrefixes(h.podCIDRs, "--pod-cidr"); err != nil {
		return nil, err
	}
	if cfg.NodeCIDRs, err = parsePrefixes(h.nodeCIDR, "--node-cidr"); err != nil {
		return nil, err
	}
	if cfg.Addresses, err = parsePrefixes(h.addrs, "--node-address"); err != nil {
		return nil, err
	}
	rs, err := hostfw.FromFlows(cfg, func(fn func(*schema.Flow)) error { return src.each(ctx, g, fn) })
	if err != nil {
		return nil, err
	}
	if len(cfg.Addresses) == 0 {
		g.log.Info("node addresses from the flows the node recorded as inbound", "addresses", fmt.Sprint(rs.Addresses))
	}
	return rs, nil
}

func parsePrefixes(in []string, flag string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			return nil, fmt.Errorf("%s %q: want an address or a prefix", flag, s)
		}
	}
	return out, nil
}

func (h *hostFirewall) fileName() string {
	node := h.ns.node
	if node == "" {
		node = "node"
	}
	return "host-" + strings.NewReplacer("/", "_", " ", "_").Replace(node) + ".nft"
}

func (h *hostFirewall) summary(w io.Writer, rs *hostfw.Ruleset, where string) {
	observed := 0
	for _, r := range rs.Rules {
		if r.Hosts > 0 {
			observed++
		}
	}
	fmt.Fprintf(w, "host firewall for node %s: %d rules (%d for observed service ports) from %d inbound conntrack flows; %s\n",
		h.ns.node, len(rs.Rules), observed, rs.Observed, where)
}

// recommendHost writes <out>/host-<node>.nft.
func (h *hostFirewall) recommend(cmd *cobra.Command, g *globals, src *flowSource, out string) error {
	defer h.ns.close()
	rs, err := h.build(cmd.Context(), g, src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	now := time.Now()
	base := strings.TrimSuffix(h.fileName(), ".nft")
	files := map[string]*bytes.Buffer{}
	var missing []hostfw.Unexpressed
	var how string
	switch h.flavor {
	case "nft":
		files[base+".nft"] = &bytes.Buffer{}
		err = rs.WriteText(files[base+".nft"], now)
		how = "load with nft -f, or flowwarden enforce --host --apply"
	case "ufw":
		files[base+".ufw.sh"] = &bytes.Buffer{}
		missing, err = rs.WriteUFW(files[base+".ufw.sh"], now)
		how = "review, run as root, then ufw --force enable"
	case "firewalld":
		files[base+".firewalld.xml"], files[base+".firewalld.sh"] = &bytes.Buffer{}, &bytes.Buffer{}
		if _, err = rs.WriteFirewalldZone(files[base+".firewalld.xml"], now); err == nil {
			missing, err = rs.WriteFirewalldCommands(files[base+".firewalld.sh"], now)
		}
		how = "the zone file for /etc/firewalld/zones/" + hostfw.FirewalldZone + ".xml, or run the firewall-cmd lines as root"
	default:
		return fmt.Errorf("--host-flavor %q: want nft, ufw or firewalld", h.flavor)
	}
	if err != nil {
		return err
	}
	var paths []string
	for name, text := range files {
		path := filepath.Join(out, name)
		if err := os.WriteFile(path, text.Bytes(), 0o644); err != nil {
			return err
		}
		paths = append(paths, path)
	}
	slices.Sort(paths)
	if h.structured() {
		sum := h.summaryOf(rs, "written")
		sum.Files, sum.How = paths, how
		for _, m := range missing {
			sum.NotExpressible = append(sum.NotExpressible, m.String())
		}
		return h.output.print(cmd.OutOrStdout(), sum, nil)
	}
	h.summary(cmd.OutOrStdout(), rs, "written to "+strings.Join(paths, " and ")+" ("+how+")")
	for _, m := range missing {
		fmt.Fprintf(cmd.OutOrStdout(), "  not expressible in %s: %s\n", h.flavor, m)
	}
	return nil
}

// enforce dry-runs the ruleset and, with --apply, applies it with rollback.
func (h *hostFirewall) enforce(cmd *cobra.Command, g *globals, src *flowSource, out string) error {
	defer h.ns.close()
	rs, err := h.build(cmd.Context(), g, src)
	if err != nil {
		return err
	}
	var text bytes.Buffer
	if err := rs.WriteText(&text, time.Now()); err != nil {
		return err
	}
	if out != "" {
		if err := os.WriteFile(out, text.Bytes(), 0o644); err != nil {
			return err
		}
	}
	w := cmd.OutOrStdout()
	if !h.apply {
		n, err := hostfw.DryRun(rs)
		if err != nil {
			return err
		}
		if h.structured() {
			sum := h.summaryOf(rs, "dry run passed")
			sum.Ruleset = text.String()
			return h.output.print(w, sum, nil)
		}
		if out == "" {
			_, _ = w.Write(text.Bytes())
		}
		h.summary(w, rs, fmt.Sprintf("dry run passed (the kernel accepted all %d rules in a scratch namespace); nothing applied: add --apply", n))
		return nil
	}
	// A dropped SSH session (SIGHUP), ^C or SIGTERM rolls back too; so
	// does this process dying, as a guard process makes the change.
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGHUP)
	defer stop()
	prompt := cmd.ErrOrStderr()
	confirm := func(ctx context.Context) error {
		fmt.Fprintf(prompt, "The new host firewall is in force. Check that you can still open NEW connections to the node\n"+
			"(a second SSH session), then type yes within %s, or the previous ruleset is restored: ", h.timeout)
		return confirmFrom(ctx, cmd.InOrStdin())
	}
	if err := hostfw.ApplyGuarded(ctx, h.ns.nsPath, rs, h.timeout, confirm, g.log); err != nil {
		return err
	}
	kept := filepath.Join(g.dataDir, hostfw.ConfirmedFile)
	if err := hostfw.SaveConfirmed(kept, rs, time.Now()); err != nil {
		h.summary(w, rs, "applied and confirmed")
		return fmt.Errorf("applied and confirmed, but a reboot will clear it: %w", err)
	}
	if h.structured() {
		sum := h.summaryOf(rs, "applied and confirmed")
		sum.Kept = kept
		return h.output.print(w, sum, nil)
	}
	h.summary(w, rs, "applied and confirmed; kept in "+kept+" (serve --nftables with this --data-dir restores it after a reboot)")
	return nil
}

// structured: -o json or yaml rather than the text summary.
func (h *hostFirewall) structured() bool {
	return h.output != nil && h.output.value != "table" && h.output.value != "markdown"
}

// hostSummary is what recommend --host and enforce --host print with -o json|yaml.
type hostSummary struct {
	Node           string   `json:"node"`
	Status         string   `json:"status"`
	Rules          int      `json:"rules"`
	ObservedRules  int      `json:"observed_port_rules"`
	InboundFlows   int      `json:"inbound_flows"`
	Files          []string `json:"files,omitempty"`
	How            string   `json:"how,omitempty"`
	NotExpressible []string `json:"not_expressible,omitempty"`
	Ruleset        string   `json:"ruleset,omitempty"`
	Kept           string   `json:"kept,omitempty"`
}

func (h *hostFirewall) summaryOf(rs *hostfw.Ruleset, status string) hostSummary {
	sum := hostSummary{Node: h.ns.node, Status: status, Rules: len(rs.Rules), InboundFlows: int(rs.Observed)}
	for _, r := range rs.Rules {
		if r.Hosts > 0 {
			sum.ObservedRules++
		}
	}
	return sum
}

// pullRequest commits hosts/<node>.nft on a new branch; the body lists the
// rules with their evidence.
func (h *hostFirewall) pullRequest(ctx context.Context, g *globals, src *flowSource, pr enforcer.PullRequest) (*enforcer.PRResult, error) {
	defer h.ns.close()
	rs, err := h.build(ctx, g, src)
	if err != nil {
		return nil, err
	}
	if pr.Title == "" {
		pr.Title = "flowwarden: host firewall for " + h.ns.node
	}
	var text bytes.Buffer
	if err := rs.WriteText(&text, time.Now()); err != nil {
		return nil, err
	}
	path := "hosts/" + h.fileName()
	out, err := enforcer.DeliverFiles(pr, map[string][]byte{path: text.Bytes()},
		fmt.Sprintf("%d rules from %d inbound connections seen by conntrack on %s.", len(rs.Rules), rs.Observed, h.ns.node))
	if err != nil {
		return nil, err
	}
	var body strings.Builder
	if err := rs.WriteMarkdown(&body, pr.Title, path); err != nil {
		return nil, err
	}
	out.Body = body.String()
	return out, nil
}

// confirmFrom waits for a line "yes" on r. The reading goroutine ends with
// r (or the process): a blocked read on stdin cannot be interrupted.
func confirmFrom(ctx context.Context, r io.Reader) error {
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			default:
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no confirmation: %w", context.Cause(ctx))
		case l, ok := <-lines:
			if !ok {
				return errors.New("stdin closed without confirmation")
			}
			if strings.EqualFold(l, "yes") {
				return nil
			}
		}
	}
}
