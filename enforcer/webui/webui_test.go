package webui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
	"github.com/flowwarden/flowwarden/ingest/hubble"
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
	handler := New(Config{Window: 2 * time.Hour}, conn, nil)
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
		`class="edge forwarded"`, `class="edge dropped"`, `id="findings"`, "policy denied 300 flows", "Recommended policies", `id="changes"`,
		`id="no-policies"`, "<td>guardrail: no tenant access into system namespace kube-system beyond DNS</td>", "<td>not observed</td>",
		`id="blast-radius"`, "% reduction</strong> with the recommended policies"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page as Chromium rendered it lacks %q", want)
		}
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
	handler := New(Config{MaxAge: time.Hour}, conn, nil)
	srv := httptest.NewServer(handler)
	defer srv.Close()
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
		return string(m[1])
	}
	if n := flowsShown(); n != "6" {
		t.Fatalf("page shows %s flows, want 6", n)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows[6:]); err != nil {
		t.Fatal(err)
	}
	if n := flowsShown(); n != "6" {
		t.Errorf("within MaxAge the page was built again (%s flows)", n)
	}
	handler.SetCurrent(nil)
	if n := flowsShown(); n != fmt.Sprint(len(flows)) {
		t.Errorf("after SetCurrent the page shows %s flows, want %d", n, len(flows))
	}

	// A diff that cannot finish in its budget leaves the rest of the page.
	slow := httptest.NewServer(New(Config{DiffBudget: time.Nanosecond}, conn, nil))
	defer slow.Close()
	resp, err := http.Get(slow.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`id="diff-error"`, "did not finish within 1ns", `id="service-map"`, "flowwarden-default-deny"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("with a diff out of time, the page lacks %q", want)
		}
	}
	if strings.Contains(string(body), `id="changes"`) || strings.Contains(string(body), `class="err">context`) {
		t.Error("a diff out of time still shows a table or fails the page")
	}
}
