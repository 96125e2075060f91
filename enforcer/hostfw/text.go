package hostfw

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// String renders the rule in nft syntax, as `nft list` prints it.
func (r Rule) String() string {
	var parts []string
	if len(r.CtStates) > 0 {
		parts = append(parts, "ct state "+strings.Join(r.CtStates, ","))
	}
	if r.Iif != "" {
		parts = append(parts, "iif "+strconv.Quote(r.Iif))
	}
	if r.Iifname != "" {
		parts = append(parts, "iifname "+strconv.Quote(r.Iifname))
	}
	if r.Src.IsValid() {
		fam := "ip"
		if r.Src.Addr().Is6() {
			fam = "ip6"
		}
		src := r.Src.Addr().String()
		if r.Src.Bits() != r.Src.Addr().BitLen() {
			src = r.Src.String()
		}
		parts = append(parts, fam+" saddr "+src)
	}
	switch {
	case r.Protocol != "" && r.Port != 0:
		parts = append(parts, r.Protocol+" dport "+strconv.Itoa(int(r.Port)))
	case r.Protocol != "":
		parts = append(parts, "meta l4proto "+r.Protocol)
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	parts = append(parts, r.Verdict)
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// WriteText writes the ruleset as an `nft -f` file. Loading it replaces
// table inet flowwarden atomically and touches nothing else.
func (rs *Ruleset) WriteText(w io.Writer, generated time.Time) error {
	var b strings.Builder
	b.WriteString("#!/usr/sbin/nft -f\n")
	node := rs.Node
	if node == "" {
		node = "(any)"
	}
	addrs := make([]string, len(rs.Addresses))
	for i, a := range rs.Addresses {
		addrs[i] = a.String()
	}
	fmt.Fprintf(&b, "# flowwarden host firewall for node %s (addresses %s), generated %s\n", node, strings.Join(addrs, ", "), generated.UTC().Format(time.RFC3339))
	if rs.Observed > 0 {
		fmt.Fprintf(&b, "# from %d inbound flows seen by conntrack, %s to %s (%d other flows ignored).\n",
			rs.Observed, rs.First.UTC().Format(time.RFC3339), rs.Last.UTC().Format(time.RFC3339), rs.Ignored)
	} else {
		fmt.Fprintf(&b, "# from no inbound flows (%d other flows ignored): only the fixed rules remain.\n", rs.Ignored)
	}
	b.WriteString(`# Inbound default deny: established/related, loopback, CNI/overlay and each
# observed service port from its observed sources are accepted; the rest is
# counted and dropped. Only table inet flowwarden is replaced.
# Apply with a dry run and automatic rollback: flowwarden enforce --host --apply
table inet ` + TableName + `
delete table inet ` + TableName + `
table inet ` + TableName + ` {
	chain input {
		type filter hook input priority filter; policy drop;
`)
	for _, r := range rs.Rules {
		b.WriteString("\t\t" + r.String() + "\n")
	}
	b.WriteString("\t}\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes a pull request body for the ruleset committed at
// path: what it allows and on what evidence, what it leaves alone, and how
// to apply it.
func (rs *Ruleset) WriteMarkdown(w io.Writer, title, path string) error {
	var b strings.Builder
	addrs := make([]string, len(rs.Addresses))
	for i, a := range rs.Addresses {
		addrs[i] = "`" + a.String() + "`"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "`%s` replaces table `inet %s` on node `%s` (%s) with an inbound default deny. "+
		"It was made from %d inbound flows conntrack saw", path, TableName, rs.Node, strings.Join(addrs, ", "), rs.Observed)
	if rs.Observed > 0 {
		fmt.Fprintf(&b, " from %s to %s", rs.First.UTC().Format(time.RFC3339), rs.Last.UTC().Format(time.RFC3339))
	}
	b.WriteString(".\n\n## Allowed because they were used\n\n| protocol/port | from | flows | first seen | last seen |\n|---|---|---|---|---|\n")
	n := 0
	for _, r := range rs.Rules {
		if r.Hosts == 0 {
			continue
		}
		n++
		port := r.Protocol
		if r.Port != 0 {
			port += "/" + strconv.Itoa(int(r.Port))
		}
		from := "`" + r.Src.String() + "`"
		if r.Hosts > 1 {
			from += fmt.Sprintf(" (%d hosts)", r.Hosts)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s |\n", port, from, r.Flows,
			r.First.UTC().Format(time.RFC3339), r.Last.UTC().Format(time.RFC3339))
	}
	if n == 0 {
		b.WriteString("| (none) | | | | |\n")
	}
	b.WriteString("\n## Always allowed\n\n```\n")
	for _, r := range rs.Rules {
		if r.Hosts == 0 && r.Verdict == "accept" {
			b.WriteString(r.String() + "\n")
		}
	}
	b.WriteString("```\n\nEverything else is counted and dropped by the last rule (`flowwarden: not observed`); " +
		"`serve --nftables` stores its counter and the `nft-drop-spike` detector pages on a surge.\n\n" +
		"## Applying it\n\nOn the node, as root: `flowwarden enforce --host --apply --since …` (dry run in a scratch " +
		"network namespace, then rolled back unless confirmed), or `nft -f " + path + "`.\n")
	_, err := io.WriteString(w, b.String())
	return err
}
