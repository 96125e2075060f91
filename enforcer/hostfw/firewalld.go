package hostfw

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// FirewalldZone is the zone flowwarden writes: the default zone, target
// DROP, one rich rule per accepted rule. CNI interfaces go to firewalld's
// own "trusted" zone.
const FirewalldZone = "flowwarden"

// firewalld's zone file (firewalld.zone(5)), only the parts used here.
type fwZone struct {
	XMLName     xml.Name     `xml:"zone"`
	Target      string       `xml:"target,attr"`
	Short       string       `xml:"short"`
	Description string       `xml:"description"`
	Rules       []fwRichRule `xml:"rule"`
}

type fwRichRule struct {
	Family   string      `xml:"family,attr,omitempty"`
	Source   *fwSource   `xml:"source,omitempty"`
	Port     *fwPort     `xml:"port,omitempty"`
	Protocol *fwProtocol `xml:"protocol,omitempty"`
	Accept   *struct{}   `xml:"accept,omitempty"`
}

type fwSource struct {
	Address string `xml:"address,attr"`
}

type fwPort struct {
	Port     string `xml:"port,attr"`
	Protocol string `xml:"protocol,attr"`
}

type fwProtocol struct {
	Value string `xml:"value,attr"`
}

// richRule is r as a firewalld rich rule, or the reason it is not one.
// Interface rules are not rich rules: they bind the interface to the
// trusted zone.
func (r Rule) richRule() (fwRichRule, string) {
	if r.Verdict != "accept" {
		return fwRichRule{}, "only accepts are rendered; the zone's target drops the rest"
	}
	rr := fwRichRule{Accept: &struct{}{}}
	if r.Src.IsValid() {
		rr.Family = "ipv4"
		if r.Src.Addr().Is6() {
			rr.Family = "ipv6"
		}
		rr.Source = &fwSource{Address: prefixText(r)}
	}
	switch {
	case r.Protocol != "" && r.Port != 0:
		rr.Port = &fwPort{Port: strconv.Itoa(int(r.Port)), Protocol: r.Protocol}
	case r.Protocol == "icmp":
		rr.Family = "ipv4"
		rr.Protocol = &fwProtocol{Value: "icmp"}
	case r.Protocol == "ipv6-icmp":
		rr.Family = "ipv6"
		rr.Protocol = &fwProtocol{Value: "ipv6-icmp"}
	case r.Protocol != "":
		rr.Protocol = &fwProtocol{Value: r.Protocol}
	}
	return rr, ""
}

// String is the rich rule in firewall-cmd's language (firewalld.richlanguage(5)).
func (rr fwRichRule) String() string {
	parts := []string{"rule"}
	if rr.Family != "" {
		parts = append(parts, `family="`+rr.Family+`"`)
	}
	if rr.Source != nil {
		parts = append(parts, `source address="`+rr.Source.Address+`"`)
	}
	if rr.Port != nil {
		parts = append(parts, `port port="`+rr.Port.Port+`" protocol="`+rr.Port.Protocol+`"`)
	}
	if rr.Protocol != nil {
		parts = append(parts, `protocol value="`+rr.Protocol.Value+`"`)
	}
	parts = append(parts, "accept")
	return strings.Join(parts, " ")
}

// firewalld splits the ruleset: interfaces for the trusted zone, rich rules
// for the flowwarden zone, and what neither says.
func (rs *Ruleset) firewalld() (ifaces []string, rules []fwRichRule, comments []string, missing []Unexpressed) {
	for _, r := range rs.Rules {
		if fixed, _ := fixedHead(r); fixed && r.Protocol != "ipv6-icmp" {
			continue
		}
		if r.Verdict == "drop" && !r.Src.IsValid() && r.Protocol == "" {
			continue // the zone's target
		}
		if r.Iifname != "" {
			ifaces = append(ifaces, ufwInterface(r.Iifname))
			continue
		}
		rr, why := r.richRule()
		if why != "" {
			missing = append(missing, Unexpressed{r, why})
			continue
		}
		rules = append(rules, rr)
		comments = append(comments, r.Comment)
	}
	return ifaces, rules, comments, missing
}

// WriteFirewalldZone writes the zone file (/etc/firewalld/zones/flowwarden.xml,
// or firewall-cmd --permanent --new-zone-from-file).
func (rs *Ruleset) WriteFirewalldZone(w io.Writer, generated time.Time) ([]Unexpressed, error) {
	_, rules, _, missing := rs.firewalld()
	var head strings.Builder
	rs.writeHeader(&head, "", "firewalld", generated)
	z := fwZone{Target: "DROP", Short: FirewalldZone,
		Description: strings.TrimSpace(head.String()) + " CNI interfaces are bound to the trusted zone by the firewall-cmd lines.",
		Rules:       rules}
	out, err := xml.MarshalIndent(z, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("firewalld zone: %w", err)
	}
	_, err = io.WriteString(w, xml.Header+string(out)+"\n")
	return missing, err
}

// WriteFirewalldCommands writes the same zone as firewall-cmd lines: a new
// permanent zone with target DROP, one rich rule per accepted rule, the CNI
// interfaces in the trusted zone, flowwarden as the default zone, reload.
func (rs *Ruleset) WriteFirewalldCommands(w io.Writer, generated time.Time) ([]Unexpressed, error) {
	ifaces, rules, comments, missing := rs.firewalld()
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	rs.writeHeader(&b, "#", "firewalld", generated)
	b.WriteString(`# firewalld itself accepts established/related traffic and loopback and
# drops invalid packets. The zone is also written as flowwarden.xml
# (firewall-cmd --permanent --new-zone-from-file=... --name=flowwarden).
set -e
firewall-cmd --permanent --new-zone=` + FirewalldZone + `
firewall-cmd --permanent --zone=` + FirewalldZone + ` --set-target=DROP
`)
	for i, rr := range rules {
		if comments[i] != "" {
			b.WriteString("# " + comments[i] + "\n")
		}
		b.WriteString("firewall-cmd --permanent --zone=" + FirewalldZone + " --add-rich-rule=" + shellQuote(rr.String()) + "\n")
	}
	for _, name := range ifaces {
		b.WriteString("firewall-cmd --permanent --zone=trusted --add-interface=" + name + "\n")
	}
	for _, m := range missing {
		fmt.Fprintf(&b, "# not expressible in firewalld: %s\n", m)
	}
	b.WriteString("firewall-cmd --set-default-zone=" + FirewalldZone + "\nfirewall-cmd --reload\n")
	_, err := io.WriteString(w, b.String())
	return missing, err
}
