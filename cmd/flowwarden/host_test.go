package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/nftables"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/enforcer/hostfw/hostfwtest"
	"github.com/flowwarden/flowwarden/ingest/netnstest"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// runIn executes the CLI in-process with stdin.
func runIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetIn(stdin)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestHostFirewallEndToEnd is the host layer through the CLI: serve --conntrack
// --nftables reads a node namespace's conntrack table and counters into
// ClickHouse while a client uses one port over a veth pair; recommend --host
// writes the nft file; enforce --host dry-runs it, then --apply is rolled back
// when nobody confirms and kept when "yes" is typed, after which the used
// port answers and a listening port nobody used does not.
func TestHostFirewallEndToEnd(t *testing.T) {
	dsn, _ := chtest.Database(t)
	p := netnstest.NewPair(t)
	p.Node.TrackConnections(t)
	p.Node.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
	p.Node.Serve(t, 18100, 18101, 18102)

	ctx, cancel := context.WithCancel(context.Background())
	done, serveLogs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--conntrack", "--nftables", "--netns", p.Node.Name,
		"--node", "node-1", "--conntrack-interval", "200ms", "--nftables-interval", "200ms", "--detect=false",
		"--listen", amtest.FreeAddr(t), "--data-dir", t.TempDir(), "--flush-interval", "200ms", "--flows-ttl", "0", "--log-level", "warn")
	time.Sleep(500 * time.Millisecond)
	if err := p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, 18100), 3, 5000); err != nil {
		t.Fatal(err)
	}
	// 18102 is used once while we watch, and never again: the report
	// later finds its rule unused.
	if err := p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, 18102), 1, 100); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var flows, bytesSum, counterRows uint64
	waitUntil(t, 30*time.Second, "3 conntrack flows with their bytes, and counter readings", func() bool {
		_ = conn.QueryRow(context.Background(), `SELECT count(), sum(bytes) FROM flows
			WHERE source = 'conntrack' AND node = 'node-1' AND dst_port = 18100 AND src_ip = toIPv6('10.199.0.2')`).Scan(&flows, &bytesSum)
		_ = conn.QueryRow(context.Background(), `SELECT count() FROM nft_counters WHERE node = 'node-1' AND table = 'observe'`).Scan(&counterRows)
		return flows >= 3 && counterRows > 0
	})
	time.Sleep(time.Second) // a duplicate report would land now
	_ = conn.QueryRow(context.Background(), `SELECT count(), sum(bytes) FROM flows WHERE source = 'conntrack' AND dst_port = 18100`).Scan(&flows, &bytesSum)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(serveLogs.String(), "accounting is off") {
		t.Errorf("serve warned about conntrack accounting, which the node namespace has on:\n%s", serveLogs)
	}
	if flows != 3 || bytesSum < 3*2*5000 {
		t.Fatalf("%d conntrack flows with %d bytes for 3 connections of 5000 bytes each way", flows, bytesSum)
	}
	// serve marked them inbound from the node's interface addresses.
	var inbound uint64
	_ = conn.QueryRow(context.Background(), `SELECT count() FROM flows WHERE source = 'conntrack' AND dst_port = 18100
		AND direction = 'INGRESS' AND dst_ip = toIPv6(`+clickhouse.QuoteString(p.NodeAddr.String())+`)`).Scan(&inbound)
	if inbound != 3 {
		t.Fatalf("%d of the 3 conntrack flows to the node are marked INGRESS", inbound)
	}

	// recommend --host, off the node and without --node-address: the node's
	// inbound traffic is what serve recorded as such.
	dir := t.TempDir()
	out, err := runIn(context.Background(), nil, "recommend", "--out", dir, "--host", "--since", "1h", "--clickhouse", dsn, "--node", "node-1", "--log-level", "warn")
	if err != nil {
		t.Fatalf("recommend --host: %v\n%s", err, out)
	}
	file, err := os.ReadFile(filepath.Join(dir, "host-node-1.nft"))
	if err != nil {
		t.Fatalf("%v (output: %s)", err, out)
	}
	if !strings.Contains(string(file), `ip saddr 10.199.0.2 tcp dport 18100 counter accept comment "tcp/18100 from 10.199.0.2/32: 3 flows from 1 host`) ||
		strings.Contains(string(file), "18101") || !strings.Contains(string(file), "(addresses "+p.NodeAddr.String()+"/32)") {
		t.Errorf("host-node-1.nft:\n%s", file)
	}
	// The commands that touch the node work in its namespace.
	common := []string{"--host", "--since", "1h", "--clickhouse", dsn, "--node", "node-1", "--netns", p.Node.Name, "--log-level", "warn"}
	if !strings.Contains(out, "2 for observed service ports") {
		t.Errorf("recommend --host said: %s", out)
	}
	// The same as JSON (-o json, as every printing command).
	hostJSON, stderr, code := runCLI(t, nil, "recommend", "-o", "json", "--out", t.TempDir(), "--host", "--since", "1h", "--clickhouse", dsn, "--node", "node-1", "--log-level", "warn")
	if sum := jsonDoc(t, "recommend --host", hostJSON); code != 0 || sum["observed_port_rules"] != 2.0 || sum["node"] != "node-1" || len(sum["files"].([]any)) != 1 {
		t.Errorf("recommend --host -o json: exit %d %v\n%s", code, sum, stderr)
	}
	hostFlavorsOpenTheSamePorts(t, dsn, string(file))

	// enforce --host --repo: the same ruleset as a pull request.
	repoDir, repo := initRepo(t)
	bodyFile := filepath.Join(t.TempDir(), "body.md")
	out, err = runIn(context.Background(), nil, append([]string{"enforce", "--repo", repoDir, "--branch", "host-fw", "--pr-body", bodyFile}, common...)...)
	if err != nil {
		t.Fatalf("enforce --host --repo: %v\n%s", err, out)
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName("host-fw"), true)
	if err != nil {
		t.Fatal(err)
	}
	commit, _ := repo.CommitObject(ref.Hash())
	tree, _ := commit.Tree()
	committed, err := tree.File("hosts/host-node-1.nft")
	if err != nil {
		t.Fatalf("the branch lacks hosts/host-node-1.nft: %v", err)
	}
	content, _ := committed.Contents()
	// The same rules as recommend wrote (the header's timestamp aside).
	rulesOf := func(s string) string { _, after, _ := strings.Cut(s, "table inet flowwarden\n"); return after }
	if rulesOf(content) != rulesOf(string(file)) || rulesOf(content) == "" {
		t.Errorf("the committed ruleset differs from recommend's:\n%s\n---\n%s", content, file)
	}
	body, _ := os.ReadFile(bodyFile)
	t.Logf("pull request body:\n%s", body)
	if !strings.Contains(string(body), "| tcp/18100 | `10.199.0.2/32` | 3 |") || !strings.Contains(string(body), "flowwarden enforce --host --apply") {
		t.Errorf("pull request body:\n%s", body)
	}

	nft, err := nftables.New(nftables.WithNetNSFd(p.Node.FD))
	if err != nil {
		t.Fatal(err)
	}
	tableNow := func() string { d, _ := hostfw.Describe(nft); return d }
	reachable := func(port uint16) error { return p.Client.Dial(netip.AddrPortFrom(p.NodeAddr, port), 1, 64) }

	// enforce --host without --apply: a dry run, nothing changes.
	out, err = runIn(context.Background(), nil, append([]string{"enforce"}, common...)...)
	if err != nil || !strings.Contains(out, "dry run passed") || !strings.Contains(out, "table inet flowwarden {") {
		t.Fatalf("enforce --host dry run: %v\n%s", err, out)
	}
	if d := tableNow(); !strings.HasPrefix(d, "(no table") {
		t.Fatalf("the dry run changed the namespace:\n%s", d)
	}

	// --apply, nobody answers: rolled back.
	silent, keepOpen := io.Pipe()
	defer keepOpen.Close()
	start := time.Now()
	out, err = runIn(context.Background(), silent, append([]string{"enforce", "--apply", "--confirm-timeout", "2s"}, common...)...)
	if err == nil || !errors.Is(err, hostfw.ErrNotConfirmed) {
		t.Fatalf("unconfirmed apply: %v\n%s", err, out)
	}
	if time.Since(start) < 2*time.Second || !strings.Contains(out, "type yes within 2s") {
		t.Errorf("the rollback did not wait for the confirmation timeout (%s): %s", time.Since(start), out)
	}
	if d := tableNow(); !strings.HasPrefix(d, "(no table") {
		t.Fatalf("after rollback:\n%s", d)
	}
	if err := reachable(18101); err != nil {
		t.Fatalf("after rollback the quiet port should answer again: %v", err)
	}

	// --apply, and the applying process is killed while it waits: its guard
	// rolls back.
	js, _ := json.Marshal(append([]string{"enforce", "--apply", "--confirm-timeout", "60s"}, common...))
	victim := exec.Command(os.Args[0], "-test.run=^$")
	victim.Env = append(os.Environ(), "FLOWWARDEN_TEST_RUN_CLI="+string(js))
	victimIn, _ := victim.StdinPipe()
	defer victimIn.Close()
	var victimOut syncBuffer
	victim.Stdout, victim.Stderr = &victimOut, &victimOut
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the confirmation prompt", func() bool { return strings.Contains(victimOut.String(), "type yes") })
	if d := tableNow(); strings.HasPrefix(d, "(no table") {
		t.Fatalf("not applied while waiting for confirmation: %s", victimOut.String())
	}
	_ = victim.Process.Signal(syscall.SIGKILL)
	_ = victim.Wait()
	waitUntil(t, 10*time.Second, "the guard's rollback after the applying process was killed", func() bool { return strings.HasPrefix(tableNow(), "(no table") })
	if err := reachable(18101); err != nil {
		t.Fatalf("after the guard's rollback the quiet port should answer again: %v", err)
	}

	// --apply, confirmed: kept (in force, and on disk), and it enforces.
	stateDir := t.TempDir()
	out, err = runIn(context.Background(), strings.NewReader("yes\n"),
		append([]string{"enforce", "--apply", "--confirm-timeout", "30s", "--data-dir", stateDir}, common...)...)
	if err != nil || !strings.Contains(out, "applied and confirmed; kept in "+filepath.Join(stateDir, hostfw.ConfirmedFile)) {
		t.Fatalf("confirmed apply: %v\n%s", err, out)
	}
	confirmedTable := tableNow()
	if err := reachable(18100); err != nil {
		t.Errorf("the observed port is blocked: %v", err)
	}
	if err := reachable(18101); err == nil {
		t.Error("the never-used port still answers")
	}

	// A reboot clears the table; serve --nftables, started on the node
	// with the same data directory, puts the confirmed ruleset back. The
	// reboot is simulated: the table goes, and the kept file says it was
	// confirmed in another boot (a removal within the same boot is left
	// alone; the hostfw tests show both).
	if err := hostfw.Install(nft, nil); err != nil {
		t.Fatal(err)
	}
	keptFile := filepath.Join(stateDir, hostfw.ConfirmedFile)
	kept, err := os.ReadFile(keptFile)
	if err != nil {
		t.Fatal(err)
	}
	var keptDoc map[string]any
	if err := json.Unmarshal(kept, &keptDoc); err != nil || keptDoc["boot_id"] == "" {
		t.Fatalf("kept file without a boot ID: %v\n%s", err, kept)
	}
	keptDoc["boot_id"] = "an-earlier-boot"
	kept, _ = json.Marshal(keptDoc)
	if err := os.WriteFile(keptFile, kept, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reachable(18101); err != nil {
		t.Fatalf("with the table gone the quiet port should answer: %v", err)
	}
	// Then a scan of the closed port spikes the final drop rule's counter:
	// serve --nftables opens an nft-drop-spike finding whose SQL shows the
	// readings behind it.
	ctx, cancel = context.WithCancel(context.Background())
	done, _ = runInBackground(ctx, "serve", "--clickhouse", dsn, "--nftables", "--netns", p.Node.Name,
		"--node", "node-1", "--nftables-interval", "200ms",
		"--listen", amtest.FreeAddr(t), "--data-dir", stateDir, "--flows-ttl", "0", "--log-level", "warn")
	waitUntil(t, 10*time.Second, "serve to restore the confirmed host firewall", func() bool { return tableNow() == confirmedTable })
	if err := reachable(18101); err == nil {
		t.Error("the never-used port answers after the restore")
	}
	if err := reachable(18100); err != nil {
		t.Errorf("the observed port is blocked after the restore: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // a few quiet readings teach the baseline
	if n, err := p.Client.Probe(netip.AddrPortFrom(p.NodeAddr, 18101), 60); err != nil || n != 0 {
		t.Fatalf("scan: %d of 60 connected, %v", n, err)
	}
	var summary, query string
	waitUntil(t, 60*time.Second, "an nft-drop-spike finding", func() bool {
		return conn.QueryRow(context.Background(), `SELECT summary, query FROM findings FINAL
			WHERE detector = 'nft-drop-spike' AND workload = 'node-1' ORDER BY updated_at DESC LIMIT 1`).Scan(&summary, &query) == nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(summary, `"flowwarden: not observed"`) {
		t.Errorf("finding summary: %s", summary)
	}

	// detect over the stored history finds the same spike in the stored
	// counter readings, long after serve is gone.
	out, err = runIn(context.Background(), nil, "detect", "--since", "1h", "--clickhouse", dsn, "--format", "table", "--log-level", "warn")
	if err != nil {
		t.Fatalf("detect --since: %v\n%s", err, out)
	}
	if !strings.Contains(out, "nft-drop-spike") || !strings.Contains(out, `nftables drop rule "flowwarden: not observed" (inet flowwarden input) on node node-1`) {
		t.Errorf("detect --since over the stored counters:\n%s", out)
	}

	// The quarterly report lists the host rule nobody used since it was applied.
	reportDir := t.TempDir()
	out, err = runIn(context.Background(), nil, "report", "--since", "1h", "--clickhouse", dsn, "--out", reportDir, "--log-level", "warn")
	if err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	md, _ := os.ReadFile(filepath.Join(reportDir, "report.md"))
	if !strings.Contains(string(md), "### node-1: allowed but unused (1 of 2 rules)") || !strings.Contains(string(md), ": tcp/18102 from 10.199.0.2/32: 1 flows from 1 host") ||
		strings.Contains(string(md), "tcp/18100 from") {
		t.Errorf("report.md on the host firewall:\n%s", md)
	}
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatalf("the finding's query fails: %v\n%s", err, query)
	}
	var dropped uint64
	for rows.Next() {
		var at time.Time
		var comment string
		var packets, bytes uint64
		var since int64
		if err := rows.Scan(&at, &comment, &packets, &bytes, &since); err != nil {
			t.Fatal(err)
		}
		dropped += uint64(since)
	}
	rows.Close()
	if dropped < 60 {
		t.Errorf("the finding's query shows %d dropped packets for a 60-SYN scan:\n%s", dropped, query)
	}
}

// TestServeWarnsWithoutConntrackAccounting: in a namespace where
// nf_conntrack_acct is 0, serve --conntrack says so at start, with the
// setting to change.
func TestServeWarnsWithoutConntrackAccounting(t *testing.T) {
	dsn, _ := chtest.Database(t)
	ns := netnstest.New(t)
	ns.TrackConnections(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_acct=0")
	ctx, cancel := context.WithCancel(context.Background())
	done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--conntrack", "--netns", ns.Name, "--node", "node-1",
		"--detect=false", "--listen", amtest.FreeAddr(t), "--data-dir", t.TempDir(), "--log-level", "warn")
	waitUntil(t, 30*time.Second, "the accounting warning", func() bool { return strings.Contains(logs.String(), "accounting is off") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "sysctl -w net.netfilter.nf_conntrack_acct=1") {
		t.Errorf("the warning does not say what to change:\n%s", logs)
	}
}

// hostFlavorsOpenTheSamePorts writes the end-to-end rule set as ufw and
// firewalld files (recommend --host --host-flavor) and has the tools check
// them (ufw --dry-run; firewall-offline-cmd on a private copy of
// /etc/firewalld): each opens the nft file's ports to the same sources.
func hostFlavorsOpenTheSamePorts(t *testing.T, dsn, nftFile string) {
	t.Helper()
	want := hostfwtest.NftOpens(nftFile)
	var ports []string
	for _, o := range want {
		if o.Port != "0" && o.Source != "" {
			ports = append(ports, o.String())
		}
	}
	if !slices.Equal(ports, []string{"tcp/18100 from 10.199.0.2", "tcp/18102 from 10.199.0.2"}) {
		t.Fatalf("the nft file opens %q", ports)
	}
	dir := t.TempDir()
	for _, flavor := range []string{"ufw", "firewalld"} {
		out, err := runIn(context.Background(), nil, "recommend", "--out", dir, "--host", "--host-flavor", flavor, "--since", "1h", "--clickhouse", dsn, "--node", "node-1", "--log-level", "warn")
		if err != nil || !strings.Contains(out, "2 for observed service ports") {
			t.Fatalf("recommend --host --host-flavor %s: %v\n%s", flavor, err, out)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	key := func(o []hostfwtest.Open) []string {
		var s []string
		for _, x := range o {
			s = append(s, x.String())
		}
		slices.Sort(s)
		return slices.Compact(s)
	}
	var tcpUDP, nonIface []hostfwtest.Open
	for _, o := range want {
		if o.Proto == "tcp" || o.Proto == "udp" || o.Proto == "any" {
			tcpUDP = append(tcpUDP, o)
		}
		if o.Iface == "" {
			nonIface = append(nonIface, o)
		}
	}
	ufw, _ := hostfwtest.UFWDryRun(t, read("host-node-1.ufw.sh"))
	if g, w := key(ufw), key(tcpUDP); !slices.Equal(g, w) {
		t.Errorf("ufw opens\n%s\nthe nft file\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
	zone := hostfwtest.FirewalldZoneFile(t, read("host-node-1.firewalld.xml"))
	cmds := hostfwtest.FirewalldCommands(t, read("host-node-1.firewalld.sh"))
	for name, fw := range map[string]hostfwtest.Firewalld{"zone file": zone, "firewall-cmd lines": cmds} {
		if g, w := key(fw.Opens), key(nonIface); !slices.Equal(g, w) || fw.DefaultZone != "flowwarden" || fw.Target != "DROP" {
			t.Errorf("firewalld (%s) opens\n%s\nthe nft file\n%s\n%s", name, strings.Join(g, "\n"), strings.Join(w, "\n"), fw.Output)
		}
	}
}
