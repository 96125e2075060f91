package envoy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sampleFiles are the published samples: the documentation examples copied
// into testdata, and the third-party captures of unrecorded licence read
// from ../shared when it is beside the repository (as in CI).
func sampleFiles(t testing.TB) []string {
	files, _ := filepath.Glob("../../testdata/istio-envoy/*")
	shared, _ := filepath.Glob("../../../shared/data/istio-envoy/*")
	for _, f := range shared {
		if strings.Contains(f, "third-party") || strings.Contains(f, "blog") || strings.Contains(f, "book") {
			files = append(files, f)
		}
	}
	if len(files) < 3 {
		t.Fatalf("no Envoy samples found")
	}
	return files
}

type golden struct {
	Format    string   `json:"format"`
	Start     string   `json:"start"`
	Request   string   `json:"request"`
	Code      int      `json:"code"`
	Flags     string   `json:"flags,omitempty"`
	Cluster   Cluster  `json:"cluster"`
	Direction string   `json:"direction"`
	Verdict   string   `json:"verdict"`
	Drop      string   `json:"drop_reason,omitempty"`
	Src       string   `json:"src"`
	Dst       string   `json:"dst"`
	DstNames  []string `json:"dst_names,omitempty"`
	Bytes     uint64   `json:"bytes"`
	Duration  uint32   `json:"duration_ms"`
	HTTPPath  string   `json:"http_path,omitempty"`
	MTLS      bool     `json:"mtls,omitempty"`
}

// TestSamplesGolden parses every line of every sample into the right fields.
func TestSamplesGolden(t *testing.T) {
	var p Parser
	total := 0
	for _, file := range sampleFiles(t) {
		fh, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, MaxLineBytes), MaxLineBytes)
		for n := 1; sc.Scan(); n++ {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			a, err := p.Parse(sc.Bytes())
			if err != nil {
				t.Errorf("%s:%d: %v", filepath.Base(file), n, err)
				continue
			}
			total++
			f := ToFlow(&a)
			g := golden{Format: a.Format, Start: a.StartTime.Format("2006-01-02T15:04:05.000Z"), Request: strings.TrimSpace(a.Method + " " + a.Path + " " + a.Protocol),
				Code: a.ResponseCode, Flags: a.ResponseFlags, Cluster: ParseCluster(a.UpstreamCluster), Direction: string(f.Direction),
				Verdict: string(f.Verdict), Drop: f.DropReason, Src: addrPort(f.SrcIP.String(), f.SrcPort), Dst: addrPort(f.DstIP.String(), f.DstPort),
				DstNames: f.DstNames, Bytes: f.Bytes, Duration: f.DurationMs, HTTPPath: f.HTTPPath, MTLS: f.MTLS}
			b, _ := json.Marshal(g)
			out.Write(b)
			out.WriteByte('\n')
		}
		fh.Close()
		path := filepath.Join("../../testdata/golden/envoy", filepath.Base(file)+".golden.jsonl")
		if *update {
			if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != out.String() {
			t.Errorf("%s differs from its golden file:\n%s", filepath.Base(file), out.String())
		}
	}
	// 5 documentation lines and 3 transcribed to Istio's JSON encoding are
	// in testdata; the 29 third-party lines come from ../shared when it is
	// there (it is in CI).
	want := 8
	if len(sampleFiles(t)) > 4 {
		want = 37
	}
	if total != want {
		t.Fatalf("%d lines parsed, want %d", total, want)
	}
}

func addrPort(a string, p uint16) string {
	if a == "invalid IP" {
		return ""
	}
	return a + ":" + itoa(p)
}

func itoa(p uint16) string { b, _ := json.Marshal(p); return string(b) }

func TestSpecificFields(t *testing.T) {
	var p Parser
	a, err := p.Parse([]byte(`[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 3 1 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "127.0.0.1:80" inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 10.44.1.23:37652 outbound_.8000_._.httpbin.foo.svc.cluster.local default`))
	if err != nil {
		t.Fatal(err)
	}
	f := ToFlow(&a)
	if f.Direction != schema.DirectionIngress || f.SrcIP.String() != "10.44.1.23" || f.DstIP.String() != "10.44.1.27" || f.DstPort != 80 ||
		!f.MTLS || f.HTTPStatus != 418 || f.HTTPMethod != "GET" || f.Bytes != 135 || f.DurationMs != 3 {
		t.Fatalf("inbound entry: %+v", f)
	}
	c := ParseCluster("outbound|9080|v2|reviews.bookinfo.svc.cluster.local")
	if c.Direction != "outbound" || c.Port != 9080 || c.Subset != "v2" || c.Host != "reviews.bookinfo.svc.cluster.local" {
		t.Fatalf("cluster %+v", c)
	}
}

func TestMalformedLinesCounted(t *testing.T) {
	good := `[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`
	input := strings.Join([]string{
		good,
		`{"start_time":"2023-05-02T01:45:04.158Z","response_code":"teapot"}`,
		`[not a time] "GET / HTTP/1.1" 200`,
		`{"start_time":"2023-05-02T01:45:04.158Z","bytes_sent":`,
		"just some text",
		`[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1" 200 - 0 1`,
		strings.Repeat("x", MaxLineBytes+5),
		good,
	}, "\n")
	var flows []schema.Flow
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { flows = append(flows, fs...); return nil })
	var stats ingest.Stats
	if err := ReadLines(context.Background(), strings.NewReader(input), "mixed", sink, &stats); err != nil {
		t.Fatal(err)
	}
	s := stats.Snapshot()
	if len(flows) != 2 || s.Accepted != 2 || s.RejectedTotal() != 6 {
		t.Fatalf("want 2 flows and 6 rejects: %d flows, %s", len(flows), s)
	}
}

// TestAbsurdValuesRejected: values outside their type are refused with a
// reason in both formats, never stored as something else.
func TestAbsurdValuesRejected(t *testing.T) {
	text := func(start, request, upstream, cluster, remote string) string {
		return `[` + start + `] "` + request + `" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386" "httpbin:8000" "` + upstream + `" ` + cluster + ` 10.44.1.23:37652 10.0.45.184:8000 ` + remote + ` - default`
	}
	const ok, req, up, cl, rem = "2020-11-25T21:26:18.409Z", "GET /status/418 HTTP/1.1", "10.44.1.27:80", "outbound|8000||httpbin.foo.svc.cluster.local", "10.44.1.23:46520"
	json := func(extra string) string {
		return `{"start_time":"2023-05-02T01:45:04.158Z","method":"GET","path":"/","upstream_host":"10.0.0.1:80"` + extra + `}`
	}
	cases := []struct{ name, line, reason string }{
		{"text year 2300", text("2300-01-01T00:00:00Z", req, up, cl, rem), schema.ReasonTimeRange},
		{"json year 9999", `{"start_time":"9999-12-31T23:59:59Z"}`, schema.ReasonTimeRange},
		{"text upstream port 70000", text(ok, req, "10.44.1.27:70000", cl, rem), schema.ReasonPortRange},
		{"text remote port 65536", text(ok, req, up, cl, "[fd00::1]:65536"), schema.ReasonPortRange},
		{"text cluster port", text(ok, req, up, "outbound|80000||httpbin.foo.svc.cluster.local", rem), schema.ReasonPortRange},
		{"json upstream port", json(`,"upstream_host":"10.0.0.1:99999999999999999999999"`), schema.ReasonPortRange},
		{"text invalid UTF-8", text(ok, "GET /\xff\xfe HTTP/1.1", up, cl, rem), schema.ReasonUTF8},
		{"text invalid UTF-8 elsewhere", text(ok, req, up, cl, rem) + " \xc3", schema.ReasonUTF8},
		{"json invalid UTF-8", json(`,"authority":"a` + "\xff" + `"`), schema.ReasonUTF8},
		{"text control char in path", text(ok, "GET /a\x01b HTTP/1.1", up, cl, rem), schema.ReasonControlChar},
		{"json NUL in authority", json(`,"authority":"a\u0000b"`), schema.ReasonControlChar},
		{"json ESC in path", json(`,"path":"/\u001b[2J"`), schema.ReasonControlChar},
		{"json duration", json(`,"duration":4294967296`), schema.ReasonValueRange},
		{"json bytes overflow", json(`,"bytes_sent":18446744073709551615,"bytes_received":1`), schema.ReasonValueRange},
	}
	var p Parser
	for _, c := range cases {
		_, err := p.Parse([]byte(c.line))
		if err == nil {
			t.Errorf("%s: accepted %q", c.name, c.line)
			continue
		}
		if got := RejectReason(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
		}
	}
	for _, line := range []string{text(ok, req, "10.44.1.27:65535", cl, "[fd00::1]:65535"), json(`,"authority":"héllo:80","duration":4294967295`)} {
		a, err := p.Parse([]byte(line))
		if err != nil {
			t.Errorf("refused %q: %v", line, err)
			continue
		}
		if f := ToFlow(&a); f.Validate() != nil {
			t.Errorf("flow of %q: %v", line, f.Validate())
		}
	}
}

// errAfter yields data, then fails.
type errAfter struct {
	data []byte
	err  error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestReadErrorKeepsCompleteLines: a read error in the middle of a line
// delivers every complete line before it, then reports the error.
func TestReadErrorKeepsCompleteLines(t *testing.T) {
	good := `[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`
	const lines = 300 // more than one batch of 256
	data := []byte(strings.Repeat(good+"\n", lines) + good[:40])
	boom := errors.New("input/output error")
	var n int
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { n += len(fs); return nil })
	var stats ingest.Stats
	err := ReadLines(context.Background(), &errAfter{data: data, err: boom}, "disk", sink, &stats)
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the read error", err)
	}
	if n != lines {
		t.Fatalf("%d flows delivered, want %d: %s", n, lines, stats.Snapshot())
	}
}

// TestTimeWindow: a line dated beyond the clock's skew is rejected with its
// reason; old lines are kept unless a maximum age is set.
func TestTimeWindow(t *testing.T) {
	line := func(start string) string {
		return `{"start_time":"` + start + `","method":"GET","path":"/","upstream_host":"10.0.0.1:80"}`
	}
	input := strings.Join([]string{line("2020-11-25T21:26:18.409Z"), line("2100-01-01T00:00:00Z"), line(time.Now().UTC().Format(time.RFC3339Nano))}, "\n")
	for _, c := range []struct {
		window   ingest.TimeWindow
		accepted int64
		reasons  map[string]int64
	}{
		{ingest.TimeWindow{}, 2, map[string]int64{ingest.ReasonFuture: 1}},
		{ingest.TimeWindow{MaxAge: 24 * time.Hour}, 1, map[string]int64{ingest.ReasonFuture: 1, ingest.ReasonTooOld: 1}},
		{ingest.TimeWindow{MaxSkew: -1}, 3, map[string]int64{}},
	} {
		var stats ingest.Stats
		sink := ingest.SinkFunc(func(context.Context, ...schema.Flow) error { return nil })
		if err := ReadLinesWindow(context.Background(), strings.NewReader(input), "w", c.window, sink, &stats); err != nil {
			t.Fatal(err)
		}
		s := stats.Snapshot()
		if s.Accepted != c.accepted || len(s.Rejected) != len(c.reasons) {
			t.Errorf("%+v: %s", c.window, s)
		}
		for r, n := range c.reasons {
			if s.Rejected[r] != n {
				t.Errorf("%+v: %q counted %d, want %d: %s", c.window, r, s.Rejected[r], n, s)
			}
		}
	}
}

// TestTruncatedGzipKeepsCompleteLines: an access log .gz cut short delivers
// the flows of every complete line, then reports the error.
func TestTruncatedGzipKeepsCompleteLines(t *testing.T) {
	good := `[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	for i := range 2000 {
		fmt.Fprintf(zw, "%s %d\n", good, i) // distinct lines, so the stream does not shrink to nothing
	}
	zw.Close()
	cut := b.Bytes()[:b.Len()*2/3]
	zr, err := gzip.NewReader(bytes.NewReader(cut))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err == nil {
		t.Fatal("the cut file reads without error")
	}
	want := bytes.Count(out, []byte("\n"))
	if want < 300 {
		t.Fatalf("only %d complete lines", want)
	}
	path := filepath.Join(t.TempDir(), "access.log.gz")
	if err := os.WriteFile(path, cut, 0o644); err != nil {
		t.Fatal(err)
	}
	var n int
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { n += len(fs); return nil })
	var stats ingest.Stats
	if err := ReadFile(context.Background(), path, sink, &stats); err == nil {
		t.Fatal("no error for a truncated file")
	}
	if n != want {
		t.Fatalf("%d flows, want the %d complete lines: %s", n, want, stats.Snapshot())
	}
}
