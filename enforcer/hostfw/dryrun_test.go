package hostfw

import (
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const envUnprivileged = "FLOWWARDEN_TEST_UNPRIVILEGED_DRYRUN"

// exampleRuleset is a small generated ruleset, made without a namespace.
func exampleRuleset(t *testing.T) *Ruleset {
	cfg := DefaultConfig()
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32")}
	b, err := NewBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := ctFlow("n", "192.168.1.5", "192.168.1.10", "TCP", 22, time.Now())
	b.Add(&f)
	return b.Build()
}

// TestDryRunWithoutPrivilege runs this test binary as nobody (uid 65534,
// no capabilities at all): it may not make a network namespace, so the dry
// run goes through a child in user and network namespaces of its own, as
// in the node DaemonSet's pod with CAP_NET_ADMIN only. The kernel checks
// every rule there too.
func TestDryRunWithoutPrivilege(t *testing.T) {
	if os.Getenv(envUnprivileged) == "1" {
		// The unprivileged side.
		if _, err := scratchNetNS(); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
			t.Fatalf("nobody made a network namespace (%v): the test runs with privileges", err)
		}
		rs := exampleRuleset(t)
		if n, err := DryRun(rs); err != nil || n != len(rs.Rules) {
			t.Fatalf("unprivileged dry run: %d of %d rules, %v", n, len(rs.Rules), err)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test switches to an unprivileged user and needs root to do so (CI runs as root)")
	}
	// A copy of the test binary nobody may run (go's build directory is 0700).
	dir, err := os.MkdirTemp("", "hostfw-dryrun-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "hostfw.test")
	copyExecutable(t, os.Args[0], exe)
	cmd := exec.Command(exe, "-test.run=^TestDryRunWithoutPrivilege$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envUnprivileged+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDryRunWithoutPrivilege") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// TestDryRunFallsBackToAUserNamespace takes the unprivileged path as root:
// the scratch namespace is refused, and the child loads the ruleset.
func TestDryRunFallsBackToAUserNamespace(t *testing.T) {
	newScratchNetNS = func() (int, error) { return -1, unix.EPERM }
	defer func() { newScratchNetNS = scratchNetNS }()
	rs := exampleRuleset(t)
	if n, err := DryRun(rs); err != nil || n != len(rs.Rules) {
		t.Fatalf("dry run in a user namespace: %d of %d rules, %v", n, len(rs.Rules), err)
	}
	// The child's errors come back: a comment over nft's 128 bytes is
	// refused while the child queues the ruleset.
	bad := *rs
	bad.Rules = append([]Rule{{Protocol: "tcp", Port: 22, Verdict: "accept", Comment: strings.Repeat("x", 128)}}, rs.Rules...)
	if _, err := DryRun(&bad); err == nil || !strings.Contains(err.Error(), "comment longer") {
		t.Errorf("a 128-byte comment passed the dry run: %v", err)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
