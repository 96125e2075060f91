// Package hostfwtest runs the host firewalls' own tools on flowwarden's
// ufw and firewalld output without touching the machine's firewall or its
// configuration: ufw only with --dry-run, firewalld only offline
// (firewall-offline-cmd), each in a private mount namespace where the
// tool's configuration directory is a scratch copy.
package hostfwtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Open is one opening a firewall makes: protocol ("tcp", "udp", "sctp",
// "icmp", "ipv6-icmp" or "any"), port (0: any) and source ("" or an address
// or prefix; a host has no /32 or /128).
type Open struct {
	Proto  string
	Port   string
	Source string
	Iface  string
}

func (o Open) String() string {
	s := o.Proto + "/" + o.Port + " from " + o.Source
	if o.Iface != "" {
		s += " on " + o.Iface
	}
	return s
}

// inPrivateMounts runs script with sh in a new mount namespace (private
// propagation, set by Go for CLONE_NEWNS) where each of dirs is replaced by
// a scratch copy of itself, so the tool writes nothing outside it.
func inPrivateMounts(t *testing.T, dirs []string, script string, args ...string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the host firewall tool tests need root for a private mount namespace (CI runs as root)")
	}
	var setup strings.Builder
	setup.WriteString("set -e\n")
	for _, d := range dirs {
		scratch := filepath.Join(t.TempDir(), filepath.Base(d))
		if st, err := os.Stat(d); err == nil && !st.IsDir() {
			fmt.Fprintf(&setup, "cp -a %q %q\n", d, scratch)
		} else {
			fmt.Fprintf(&setup, "mkdir -p %q\ncp -a %q/. %q/\n", scratch, d, scratch)
		}
		fmt.Fprintf(&setup, "mount --bind %q %q\n", scratch, d)
	}
	cmd := exec.Command("sh", append([]string{"-c", setup.String() + script, "sh"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// shim writes an executable sh script named name into a new directory and
// returns the directory, to put first on PATH.
func shim(t *testing.T, name, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func need(t *testing.T, tool string) {
	t.Helper()
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if _, err := os.Stat(filepath.Join(d, tool)); err == nil {
			return
		}
	}
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s is missing: run .ci/prereqs (it installs ufw and firewalld)", tool)
	}
}

var ufwTuple = regexp.MustCompile(`(?m)^### tuple ### allow (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)`)

// UFWDryRun runs the ufw script with every ufw command given --dry-run (in
// a private mount namespace over scratch copies of /etc/ufw and
// /etc/default/ufw, in case a version writes anyway) and returns the
// openings ufw said it would add, and ufw's whole output.
func UFWDryRun(t *testing.T, script string) ([]Open, string) {
	t.Helper()
	out, err := UFWDryRunErr(t, script)
	if err != nil {
		t.Fatalf("ufw --dry-run refused the script: %v\n%s\n--- script:\n%s", err, out, script)
	}
	var opens []Open
	for _, m := range ufwTuple.FindAllStringSubmatch(out, -1) {
		// allow PROTO DPORT DST SPORT SRC DIRECTION[_IFACE]
		o := Open{Proto: m[1], Port: m[2], Source: m[5]}
		if o.Port == "any" {
			o.Port = "0"
		}
		if o.Source == "0.0.0.0/0" || o.Source == "::/0" {
			o.Source = ""
		}
		if _, iface, ok := strings.Cut(m[6], "_"); ok {
			o.Iface = iface
		}
		if !slices.Contains(opens, o) {
			opens = append(opens, o)
		}
	}
	return opens, out
}

// UFWDryRunErr is UFWDryRun's run: ufw's output, and an error if a command
// failed or printed an error.
func UFWDryRunErr(t *testing.T, script string) (string, error) {
	t.Helper()
	need(t, "ufw")
	file := filepath.Join(t.TempDir(), "ufw.sh")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := inPrivateMounts(t, []string{"/etc/ufw", "/etc/default/ufw"},
		"PATH="+shim(t, "ufw", `exec /usr/sbin/ufw --dry-run "$@"`)+`:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
. "$1"`, file)
	if err == nil && strings.Contains(out, "ERROR") {
		err = fmt.Errorf("ufw printed an error")
	}
	return out, err
}

var richRule = regexp.MustCompile(`^rule(?: family="(ipv[46])")?(?: source address="([^"]+)")?(?: port port="(\d+)" protocol="(\w+)")?(?: protocol value="([\w-]+)")? accept$`)

// Firewalld is what firewall-offline-cmd reports for a configuration.
type Firewalld struct {
	DefaultZone string
	Target      string
	Opens       []Open
	Trusted     []string // interfaces of the trusted zone
	Output      string
}

const firewalldReport = `
echo "default=$(firewall-offline-cmd --get-default-zone)"
echo "target=$(firewall-offline-cmd --zone=flowwarden --get-target)"
firewall-offline-cmd --zone=flowwarden --list-rich-rules | sed 's/^/rich=/'
echo "trusted=$(firewall-offline-cmd --zone=trusted --list-interfaces)"
`

// FirewalldZoneFile loads the zone file with firewall-offline-cmd
// --new-zone-from-file, makes it the default zone, and reads it back, on a
// private copy of /etc/firewalld.
func FirewalldZoneFile(t *testing.T, zoneXML string) Firewalld {
	t.Helper()
	need(t, "firewall-offline-cmd")
	file := filepath.Join(t.TempDir(), "flowwarden.xml")
	if err := os.WriteFile(file, []byte(zoneXML), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := inPrivateMounts(t, []string{"/etc/firewalld"},
		`firewall-offline-cmd --new-zone-from-file="$1" --name=flowwarden
firewall-offline-cmd --set-default-zone=flowwarden`+firewalldReport, file)
	if err != nil {
		t.Fatalf("firewall-offline-cmd refused the zone file: %v\n%s\n--- zone:\n%s", err, out, zoneXML)
	}
	return parseFirewalld(t, out)
}

// FirewalldCommands runs the firewall-cmd script with every firewall-cmd
// line given to firewall-offline-cmd instead (--permanent dropped, --reload
// skipped: there is no daemon), on a private copy of /etc/firewalld.
func FirewalldCommands(t *testing.T, script string) Firewalld {
	t.Helper()
	need(t, "firewall-offline-cmd")
	file := filepath.Join(t.TempDir(), "firewalld.sh")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := inPrivateMounts(t, []string{"/etc/firewalld"},
		"PATH="+shim(t, "firewall-cmd", `[ "$1" = --permanent ] && shift
[ "$1" = --reload ] && exit 0
exec firewall-offline-cmd "$@"`)+`:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
(. "$1")`+firewalldReport, file)
	if err != nil {
		t.Fatalf("firewall-offline-cmd refused a firewall-cmd line: %v\n%s\n--- script:\n%s", err, out, script)
	}
	return parseFirewalld(t, out)
}

func parseFirewalld(t *testing.T, out string) Firewalld {
	t.Helper()
	fw := Firewalld{Output: out}
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "default":
			fw.DefaultZone = v
		case "target":
			fw.Target = v
		case "trusted":
			fw.Trusted = strings.Fields(v)
		case "rich":
			m := richRule.FindStringSubmatch(v)
			if m == nil {
				t.Fatalf("a rich rule flowwarden does not write: %q\n%s", v, out)
			}
			o := Open{Proto: m[4], Port: m[3], Source: m[2]}
			if m[5] != "" {
				o.Proto, o.Port = m[5], "0"
			}
			if o.Proto == "" {
				o.Proto, o.Port = "any", "0"
			}
			fw.Opens = append(fw.Opens, o)
		}
	}
	return fw
}

var (
	nftSaddr = regexp.MustCompile(`\bip6? saddr (\S+)`)
	nftDport = regexp.MustCompile(`\b(tcp|udp|sctp) dport (\d+)`)
	nftProto = regexp.MustCompile(`\bmeta l4proto ([\w-]+)`)
	nftIface = regexp.MustCompile(`\biifname "([^"]+)"`)
)

// NftOpens reads the accept rules of an nft -f file flowwarden wrote, other
// than the conntrack-state and loopback rules every flavour has built in.
// Interface names are in iptables' form (trailing + for nft's *).
func NftOpens(text string) []Open {
	var opens []Open
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		rule, _, _ := strings.Cut(line, " comment ")
		if !strings.HasSuffix(rule, " accept") || strings.HasPrefix(rule, "ct state") || strings.HasPrefix(rule, "iif ") {
			continue
		}
		o := Open{Proto: "any", Port: "0"}
		if m := nftSaddr.FindStringSubmatch(rule); m != nil {
			o.Source = strings.TrimSuffix(strings.TrimSuffix(m[1], "/32"), "/128")
		}
		if m := nftDport.FindStringSubmatch(rule); m != nil {
			o.Proto, o.Port = m[1], m[2]
		}
		if m := nftProto.FindStringSubmatch(rule); m != nil {
			o.Proto = m[1]
		}
		if m := nftIface.FindStringSubmatch(rule); m != nil {
			o.Iface = strings.TrimSuffix(m[1], "*")
			if o.Iface != m[1] {
				o.Iface += "+"
			}
		}
		opens = append(opens, o)
	}
	return opens
}
