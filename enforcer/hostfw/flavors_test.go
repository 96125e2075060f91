package hostfw_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/enforcer/hostfw/hostfwtest"
	"github.com/flowwarden/flowwarden/schema"
)

func flavorExample(t *testing.T) *hostfw.Ruleset {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	cfg := hostfw.DefaultConfig()
	cfg.Node = "node-a"
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32"), netip.MustParsePrefix("fd00:1::10/128")}
	cfg.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	cfg.NodeCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
	b, err := hostfw.NewBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	add := func(src, dst, proto string, port uint16) {
		f := schema.Flow{Time: t0, Node: "node-a", Source: schema.SourceConntrack, Verdict: schema.VerdictForwarded,
			SrcIP: netip.MustParseAddr(src), DstIP: netip.MustParseAddr(dst), Protocol: proto, DstPort: port, SrcPort: 40000}
		b.Add(&f)
	}
	add("192.168.1.5", "192.168.1.10", "TCP", 22)
	for _, h := range []string{"192.168.2.1", "192.168.2.2", "192.168.2.3", "192.168.2.4"} {
		add(h, "192.168.1.10", "TCP", 10250) // collapsed to the /24
	}
	add("192.168.1.5", "192.168.1.10", "ICMPv4", 0)
	add("fd00:1::99", "fd00:1::10", "TCP", 9100)
	add("203.0.113.9", "192.168.1.10", "UDP", 53)
	add("192.168.1.6", "192.168.1.10", "SCTP", 3868)
	return b.Build()
}

func sorted(o []hostfwtest.Open) []string {
	var s []string
	for _, x := range o {
		s = append(s, x.String())
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// TestUFWScriptAcceptedByUFW: ufw --dry-run takes every line of the script
// and would open exactly the nft file's TCP/UDP ports and interfaces to the
// same sources; what ufw cannot say (ICMP, SCTP) is listed.
func TestUFWScriptAcceptedByUFW(t *testing.T) {
	rs := flavorExample(t)
	var nft, ufw strings.Builder
	if err := rs.WriteText(&nft, time.Now()); err != nil {
		t.Fatal(err)
	}
	missing, err := rs.WriteUFW(&ufw, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, out := hostfwtest.UFWDryRun(t, ufw.String())
	if !strings.Contains(out, "Default incoming policy changed to 'deny'") {
		t.Errorf("the script does not set default deny incoming:\n%s", out)
	}
	var want []hostfwtest.Open
	for _, o := range hostfwtest.NftOpens(nft.String()) {
		if o.Proto == "tcp" || o.Proto == "udp" || (o.Proto == "any" && o.Port == "0") {
			want = append(want, o)
		}
	}
	if g, w := sorted(got), sorted(want); !slices.Equal(g, w) || len(w) < 8 {
		t.Errorf("ufw would open:\n%s\nthe nft file opens:\n%s\nscript:\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"), ufw.String())
	}
	var why []string
	for _, m := range missing {
		why = append(why, m.String())
	}
	if len(missing) != 2 || !strings.Contains(why[0], "icmp") || !strings.Contains(why[1], "sctp dport 3868") {
		t.Errorf("unexpressed in ufw: %q", why)
	}

	// The check can fail: ufw refuses a rule it does not understand.
	bad := strings.Replace(ufw.String(), "port 22", "port 70000", 1)
	if bad == ufw.String() {
		t.Fatal("no port 22 rule")
	}
	if out, err := hostfwtest.UFWDryRunErr(t, bad); err == nil {
		t.Errorf("ufw --dry-run took port 70000:\n%s", out)
	}
}

// TestFirewalldAcceptedByFirewallOfflineCmd: the zone file and the
// firewall-cmd lines, each applied with firewall-offline-cmd to a private
// copy of /etc/firewalld, give the same zone, with the nft file's openings.
func TestFirewalldAcceptedByFirewallOfflineCmd(t *testing.T) {
	rs := flavorExample(t)
	var nft, zone, cmds strings.Builder
	if err := rs.WriteText(&nft, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.WriteFirewalldZone(&zone, time.Now()); err != nil {
		t.Fatal(err)
	}
	missing, err := rs.WriteFirewalldCommands(&cmds, time.Now())
	if err != nil || len(missing) != 0 {
		t.Fatalf("%v, unexpressed %v", err, missing)
	}
	fromFile := hostfwtest.FirewalldZoneFile(t, zone.String())
	fromCmds := hostfwtest.FirewalldCommands(t, cmds.String())
	var want []hostfwtest.Open
	var ifaces []string
	for _, o := range hostfwtest.NftOpens(nft.String()) {
		if o.Iface != "" {
			ifaces = append(ifaces, o.Iface)
			continue
		}
		want = append(want, o)
	}
	for name, fw := range map[string]hostfwtest.Firewalld{"zone file": fromFile, "firewall-cmd lines": fromCmds} {
		if fw.DefaultZone != "flowwarden" || fw.Target != "DROP" {
			t.Errorf("%s: default zone %q target %q\n%s", name, fw.DefaultZone, fw.Target, fw.Output)
		}
		if g, w := sorted(fw.Opens), sorted(want); !slices.Equal(g, w) {
			t.Errorf("%s: firewalld opens:\n%s\nthe nft file opens:\n%s\n%s", name, strings.Join(g, "\n"), strings.Join(w, "\n"), fw.Output)
		}
	}
	if !slices.Equal(fromCmds.Trusted, ifaces) || len(ifaces) == 0 {
		t.Errorf("trusted zone interfaces %q, the nft file's CNI interfaces %q", fromCmds.Trusted, ifaces)
	}
	for _, s := range []string{"sctp", "icmp", "10250", "192.168.2.0/24", "fd00:1::99"} {
		if !strings.Contains(zone.String(), s) {
			t.Errorf("zone lacks %q:\n%s", s, zone.String())
		}
	}
}
