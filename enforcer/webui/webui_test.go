package webui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func TestMain(m *testing.M) { chtest.Main(m) }

const chromium = "/usr/bin/chromium"

// migrated is a fresh database with flowwarden's tables and a connection
// to it.
func migrated(t *testing.T) (string, driver.Conn) {
	t.Helper()
	dsn, _ := chtest.Database(t)
	conn, err := clickhouse.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := clickhouse.Migrate(context.Background(), conn, clickhouse.SchemaConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	return dsn, conn
}

// TestPageInHeadlessChromium stores the cross-namespace-scan scenario,
// serves the page, and opens it in real headless Chromium: the DOM must
// hold the service map with the sample workloads and both kinds of edges,
// the findings and the recommendation; a screenshot is saved.
func TestPageInHeadlessChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("headless Chromium is needed (apt-get install chromium): %v", err)
	}
	ctx := context.Background()
	dsn, conn := migrated(t)
	flows, err := hubble.ReadFlows(ctx, "../../testdata/scenarios/cross-namespace-scan.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	// The hour of the scenario, ending now.
	now := time.Now().UTC()
	shift := now.Sub(flows[len(flows)-1].Time) - time.Second
	for i := range flows {
		flows[i].Time = flows[i].Time.Add(shift)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, `INSERT INTO findings (id, detector, severity, namespace, workload, peer, summary, start, end, status, flows, evidence, query, updated_at)
		VALUES ('f1', 'cross-namespace-denial', 'warning', 'tenant-a', '', 'bookinfo', 'policy denied 300 flows from namespace tenant-a to namespace bookinfo', now64(9), now64(9), 'open', 300, '{}', 'SELECT * FROM flows WHERE src_namespace = ''tenant-a''', now64(6))`); err != nil {
		t.Fatal(err)
	}
	// The engine's mTLS coverage, as serve passes analyze.(*Engine).MTLSCoverage.
	coverage := func() []schema.NamespaceCoverage {
		return []schema.NamespaceCoverage{{Namespace: "bookinfo", Secured: 360, Total: 810, Ratio: 360.0 / 810}, {Namespace: "shop", Secured: 120, Total: 120, Ratio: 1}}
	}
	handler := New(Config{Window: 2 * time.Hour, MTLSCoverage: coverage}, clickhouse.NewReader(conn), nil)
	srv := httptest.NewServer(handler)
	defer srv.Close()

	dir := t.TempDir()
	if d := os.Getenv("FW_SCREENSHOT_DIR"); d != "" {
		dir = d
	}
	shot := filepath.Join(dir, "flowwarden-page.png")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir=" + t.TempDir(), "--window-size=1500,1400"}
	dom, err := exec.CommandContext(ctx, chromium, append(base, "--dump-dom", srv.URL+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	page := string(dom)
	for _, want := range []string{`id="service-map"`, `<svg`, `data-id="bookinfo/productpage-v1"`, `data-id="tenant-a/scanner"`,
		`class="edge forwarded"`, `class="edge dropped"`, `id="findings"`, "policy denied 300 flows", "Recommended policies", `id="allows"`,
		`id="no-policies"`, `id="would-deny"`, "<td>guardrail: no tenant access into system namespace kube-system beyond DNS</td>",
		`id="unobserved-losses"`, `id="blast-radius"`, "% reduction</strong> with the recommended policies",
		`id="mtls"`, "<tr><td>bookinfo</td><td>810</td><td>44.4%</td></tr>", "<tr><td>shop</td><td>120</td><td>100.0%</td></tr>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page as Chromium rendered it lacks %q", want)
		}
	}
	// The summary comes first, before the map and the policies; losses of
	// access nobody used are counts per namespace, not rows per pair.
	if s, m := strings.Index(page, `id="summary"`), strings.Index(page, `id="service-map"`); s < 0 || s > m {
		t.Errorf("the summary is not the first section (at %d, the map at %d)", s, m)
	}
	for _, unwanted := range []string{`id="changes"`, "<td>not observed</td>", "<td>loses</td>"} {
		if strings.Contains(page, unwanted) {
			t.Errorf("the page still lists unobserved pairs (%q)", unwanted)
		}
	}
	if strings.Count(page, "<tr>") > 400 {
		t.Errorf("%d table rows: the page lists more than a summary and the allows", strings.Count(page, "<tr>"))
	}
	if out, err := exec.CommandContext(ctx, chromium, append(base, "--screenshot="+shot, srv.URL+"/")...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10000 {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)

	// With no policies in force everything is allowed, so the proposal only
	// takes access away; once a default deny is in force (as serve's
	// --current-policies refresh would set it), the proposal gives back
	// what was observed.
	gains := regexp.MustCompile(`would lose access \((\d+) of them observed.*\) and (\d+) would gain it`)
	var body []byte
	gained := func() string {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		m := gains.FindSubmatch(body)
		if m == nil {
			t.Fatalf("no diff summary on the page")
		}
		if string(m[1]) == "0" {
			t.Error("no observed traffic loses access, but the generator's guardrails leave some out")
		}
		return string(m[2])
	}
	if g := gained(); g != "0" {
		t.Errorf("against no policies, %s pairs gain access", g)
	}
	denyAll := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Namespace: "bookinfo"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	handler.SetCurrent([]networkingv1.NetworkPolicy{denyAll})
	if g := gained(); g == "0" {
		t.Error("against a default deny in bookinfo, nothing gains access")
	}
	if strings.Contains(string(body), `id="no-policies"`) {
		t.Error("with a policy in force, the page still says none is known")
	}
}

// TestPageIsSharedWithinMaxAge: viewers within MaxAge get the page already
// built (new flows show up after it), and new policies in force make it
// stale at once.
func TestPageIsSharedWithinMaxAge(t *testing.T) {
	ctx := context.Background()
	dsn, conn := migrated(t)
	flows, err := hubble.ReadFlows(ctx, "../../testdata/hubble/basic-sample-10-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range flows {
		flows[i].Time = now.Add(-time.Duration(len(flows)-i) * time.Second)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows[:6]); err != nil {
		t.Fatal(err)
	}
	// The engine's count grows between builds, as the detectors see flows.
	var secured, total uint64 = 3, 4
	coverage := func() []schema.NamespaceCoverage {
		return []schema.NamespaceCoverage{{Namespace: "shop", Secured: secured, Total: total, Ratio: float64(secured) / float64(total)}}
	}
	handler := New(Config{MaxAge: time.Hour, MTLSCoverage: coverage}, clickhouse.NewReader(conn), nil)
	srv := httptest.NewServer(handler)
	defer srv.Close()
	mesh := regexp.MustCompile(`<tr><td>shop</td><td>(\d+)</td><td>([0-9.]+%)</td></tr>`)
	count := regexp.MustCompile(`(\d+) flows from`)
	flowsShown := func() string {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		m := count.FindSubmatch(body)
		if m == nil {
			t.Fatalf("no flow count on the page:\n%s", body)
		}
		c := mesh.FindSubmatch(body)
		if c == nil {
			t.Fatalf("no mTLS coverage row on the page:\n%s", body)
		}
		return string(m[1]) + " " + string(c[1]) + " " + string(c[2])
	}
	if n := flowsShown(); n != "6 4 75.0%" {
		t.Fatalf("page shows %s (flows, mesh requests, secured), want 6 4 75.0%%", n)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows[6:]); err != nil {
		t.Fatal(err)
	}
	secured, total = 9, 10
	if n := flowsShown(); n != "6 4 75.0%" {
		t.Errorf("within MaxAge the page was built again (%s)", n)
	}
	handler.SetCurrent(nil)
	if n, want := flowsShown(), fmt.Sprint(len(flows))+" 10 90.0%"; n != want {
		t.Errorf("after SetCurrent the page shows %s, want %s", n, want)
	}

	// A diff that cannot finish in its budget leaves the rest of the page.
	slow := httptest.NewServer(New(Config{DiffBudget: time.Nanosecond}, clickhouse.NewReader(conn), nil))
	defer slow.Close()
	resp, err := http.Get(slow.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`id="diff-error"`, "did not finish within 1ns", `id="service-map"`, "flowwarden-default-deny",
		"Not counted: serve runs without its detectors"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("with a diff out of time, the page lacks %q", want)
		}
	}
	if strings.Contains(string(body), `id="changes"`) || strings.Contains(string(body), `class="err">context`) {
		t.Error("a diff out of time still shows a table or fails the page")
	}
}

// clipCheck is appended to a rendered page: it opens every drill-down,
// then checks that the document does not scroll sideways and that every
// box and label of every service map lies within its SVG and the SVG
// within its frame, and writes the verdict into #clip-result.
const clipCheck = `<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const W = document.documentElement.clientWidth, bad = [];
  let checked = 0;
  if (document.documentElement.scrollWidth > W + 1) bad.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + W);
  document.querySelectorAll('svg').forEach(svg => {
    const s = svg.getBoundingClientRect(), f = svg.parentElement.getBoundingClientRect();
    if (s.width === 0) return;
    if (s.left < f.left - 1 || s.right > f.right + 1) bad.push('a map is wider than its frame: ' + s.right + ' > ' + f.right);
    svg.querySelectorAll('g.node rect, g.node text, text').forEach(el => {
      const r = el.getBoundingClientRect();
      if (r.width === 0) return;
      checked++;
      if (r.left < s.left - 1 || r.right > s.right + 1 || r.top < s.top - 1 || r.bottom > s.bottom + 1 || r.right > W + 1)
        bad.push('clipped: ' + (el.textContent || el.parentElement.getAttribute('data-id')) + ' at ' + Math.round(r.left) + '..' + Math.round(r.right) + ' in ' + Math.round(s.left) + '..' + Math.round(s.right));
    });
  });
  const out = document.createElement('pre');
  out.id = 'clip-result';
  out.textContent = bad.length ? 'CLIPPED ' + bad.slice(0, 5).join(' | ') : 'OK ' + checked;
  document.body.appendChild(out);
});
</script>`

// clipResult renders html (with clipCheck) in headless Chromium and
// returns the check's verdict.
func clipResult(t *testing.T, html string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "page.html")
	html = strings.Replace(html, "</body>", clipCheck+"</body>", 1)
	if err := os.WriteFile(file, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(), "--window-size=1280,900",
		"--virtual-time-budget=5000", "--dump-dom", "file://"+file).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	m := regexp.MustCompile(`<pre id="clip-result">([^<]*)</pre>`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("the clip check did not run")
	}
	return m[1]
}

// bigCluster is 60 workloads in 6 namespaces, each calling a neighbour, a
// workload two namespaces on and an address outside the cluster, over the
// last minutes.
func bigCluster(now time.Time) []schema.Flow {
	ep := func(i int) (schema.Endpoint, netip.Addr) {
		ns, name := fmt.Sprintf("team-%d", i%6), fmt.Sprintf("service-with-a-long-name-%02d", i)
		return schema.Endpoint{Namespace: ns, Pod: name + "-6b7f9c8d5d-k2x9z", Workload: name, WorkloadKind: "Deployment",
			Labels: map[string]string{"app": name, "io.kubernetes.pod.namespace": ns, "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": ns}}, netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})
	}
	var flows []schema.Flow
	for i := range 60 {
		src, sip := ep(i)
		for k, j := range []int{(i + 6) % 60, (i + 2) % 60, -1} {
			f := schema.Flow{Time: now.Add(-time.Duration(60-i) * time.Second), Node: "n1", Source: schema.SourceHubble, Verdict: schema.VerdictForwarded,
				Direction: schema.DirectionEgress, IPVersion: 4, Protocol: "TCP", Src: src, SrcIP: sip, SrcPort: 40000, DstPort: uint16(8080 + k)}
			if j < 0 {
				f.Dst, f.DstIP, f.DstPort = schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 443
			} else {
				f.Dst, f.DstIP = ep(j)
			}
			flows = append(flows, f)
		}
	}
	return flows
}

// TestManyWorkloadsNothingClipped: with 60 workloads the page's service map
// groups by namespace with a drill-down per namespace, and in headless
// Chromium neither the page nor report.html clips any part of a map.
func TestManyWorkloadsNothingClipped(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("headless Chromium is needed (apt-get install chromium): %v", err)
	}
	ctx := context.Background()
	dsn, conn := migrated(t)
	now := time.Now().UTC()
	flows := bigCluster(now)
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{}, clickhouse.NewReader(conn), nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(body), `class="ns-map"`); n != 6 {
		t.Errorf("%d namespace drill-downs on the page, want 6", n)
	}
	if !strings.Contains(string(body), `data-id="team-0/10 workloads"`) {
		t.Error("the page's map does not group team-0's workloads")
	}
	if got := clipResult(t, string(body)); !strings.HasPrefix(got, "OK ") {
		t.Errorf("page: %s", got)
	} else {
		t.Logf("page: %s elements within their maps", got)
	}

	b := enforcer.NewReportBuilder()
	for i := range flows {
		b.Add(&flows[i])
	}
	r, err := b.Build(nil, now)
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	if err := r.WriteHTML(&report); err != nil {
		t.Fatal(err)
	}
	if s, m := strings.Index(report.String(), `id="summary"`), strings.Index(report.String(), `id="service-map"`); s < 0 || s > m {
		t.Errorf("report.html does not open with the summary")
	}
	if got := clipResult(t, report.String()); !strings.HasPrefix(got, "OK ") {
		t.Errorf("report.html: %s", got)
	} else {
		t.Logf("report.html: %s elements within their maps", got)
	}
}
