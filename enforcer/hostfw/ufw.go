package hostfw

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The same Ruleset in the firewalls people run on hosts: ufw (Debian,
// Ubuntu) and firewalld (Fedora, RHEL). Both keep their own fixed head
// (established/related and loopback accepted, invalid dropped, ICMPv6
// neighbour discovery and ICMP echo accepted), so only the rules after it
// are rendered; what a tool cannot say is written as a comment and returned
// in Unexpressed.

// Unexpressed is a rule of the ruleset a host-firewall flavour cannot say,
// with the reason.
type Unexpressed struct {
	Rule   Rule
	Reason string
}

func (u Unexpressed) String() string { return u.Rule.String() + ": " + u.Reason }

// ufwInterface turns an nft interface pattern (trailing *) into iptables'
// (trailing +), which ufw passes through.
func ufwInterface(name string) string {
	if base, ok := strings.CutSuffix(name, "*"); ok {
		return base + "+"
	}
	return name
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// prefixText is the address alone for a host, the prefix otherwise.
func prefixText(r Rule) string {
	if r.Src.Bits() == r.Src.Addr().BitLen() {
		return r.Src.Addr().String()
	}
	return r.Src.String()
}

// fixedHead tells whether r is one of the rules both tools already have.
func fixedHead(r Rule) (bool, string) {
	switch {
	case len(r.CtStates) > 0 || r.Iif == "lo":
		return true, "built in"
	case r.Protocol == "ipv6-icmp" && !r.Src.IsValid():
		return true, "built in (neighbour discovery and ICMPv6 errors)"
	}
	return false, ""
}

// UFWCommand is the ufw command (without "ufw") for one rule, or "" and
// the reason when ufw cannot say it.
func (r Rule) UFWCommand() (string, string) {
	if r.Verdict != "accept" {
		return "", "only accepts are rendered; the default policy drops the rest"
	}
	var b strings.Builder
	b.WriteString("allow")
	if r.Iifname != "" {
		b.WriteString(" in on " + ufwInterface(r.Iifname))
	}
	switch r.Protocol {
	case "", "tcp", "udp":
	case "icmp", "ipv6-icmp":
		return "", "ufw has no ICMP rules on the command line; its before.rules accept echo requests and ICMP errors"
	default:
		return "", "ufw has no " + r.Protocol + " rules on the command line (add it to /etc/ufw/before.rules)"
	}
	if r.Protocol != "" {
		b.WriteString(" proto " + r.Protocol)
	}
	if r.Src.IsValid() || r.Port != 0 {
		src := "any"
		if r.Src.IsValid() {
			src = prefixText(r)
		}
		b.WriteString(" from " + src + " to any")
	}
	if r.Port != 0 {
		b.WriteString(" port " + strconv.Itoa(int(r.Port)))
	}
	if r.Comment != "" {
		b.WriteString(" comment " + shellQuote(r.Comment))
	}
	return b.String(), ""
}

// WriteUFW writes the ruleset as a shell script of ufw commands: default
// deny incoming, then one allow per rule. It does not enable ufw: the last
// line says how, once the operator has checked the script.
func (rs *Ruleset) WriteUFW(w io.Writer, generated time.Time) ([]Unexpressed, error) {
	var b strings.Builder
	var missing []Unexpressed
	b.WriteString("#!/bin/sh\n")
	rs.writeHeader(&b, "#", "ufw", generated)
	b.WriteString(`# ufw's own before.rules already accept established/related traffic,
# loopback, ICMP echo and ICMPv6 neighbour discovery, and drop invalid
# packets. Existing ufw rules are kept (ufw skips a rule it already has);
# 'ufw reset' first for exactly this set. ufw keeps no per-rule counters:
# the nft flavour does. Outgoing and routed policies are left as they are
# (the nft flavour has an input chain only).
set -e
ufw default deny incoming
`)
	for _, r := range rs.Rules {
		if fixed, _ := fixedHead(r); fixed {
			continue
		}
		if r.Verdict == "drop" && !r.Src.IsValid() && r.Protocol == "" {
			continue // the final drop is the default policy
		}
		cmd, why := r.UFWCommand()
		if cmd == "" {
			missing = append(missing, Unexpressed{r, why})
			fmt.Fprintf(&b, "# not expressible in ufw: %s (%s)\n", r.String(), why)
			continue
		}
		b.WriteString("ufw " + cmd + "\n")
	}
	b.WriteString("# Check that your SSH port is allowed above, then: ufw --force enable\n")
	_, err := io.WriteString(w, b.String())
	return missing, err
}

// writeHeader writes the comment lines every flavour starts with.
func (rs *Ruleset) writeHeader(b *strings.Builder, c, flavor string, generated time.Time) {
	node := rs.Node
	if node == "" {
		node = "(any)"
	}
	addrs := make([]string, len(rs.Addresses))
	for i, a := range rs.Addresses {
		addrs[i] = a.String()
	}
	fmt.Fprintf(b, "%s flowwarden host firewall (%s) for node %s (addresses %s), generated %s\n", c, flavor, node, strings.Join(addrs, ", "), generated.UTC().Format(time.RFC3339))
	if rs.Observed > 0 {
		fmt.Fprintf(b, "%s from %d inbound flows seen by conntrack, %s to %s (%d other flows ignored).\n", c,
			rs.Observed, rs.First.UTC().Format(time.RFC3339), rs.Last.UTC().Format(time.RFC3339), rs.Ignored)
	} else {
		fmt.Fprintf(b, "%s from no inbound flows (%d other flows ignored): only the fixed rules remain.\n", c, rs.Ignored)
	}
	fmt.Fprintf(b, "%s Inbound default deny; the same rules as the nft flavour (flowwarden recommend --host).\n", c)
}
