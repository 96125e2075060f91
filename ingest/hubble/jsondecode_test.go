package hubble

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// sampleLines returns every line of the published Hubble samples in testdata.
func sampleLines(t testing.TB) map[string][][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/hubble/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Hubble samples found: %v", err)
	}
	out := map[string][][]byte{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if len(strings.TrimSpace(sc.Text())) == 0 {
				continue
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], append([]byte(nil), sc.Bytes()...))
		}
		fh.Close()
	}
	return out
}

// TestDecoderAgreesWithProtojson is the oracle test: on every published
// sample line, the fast decoder and protojson+FromProto give the same record.
func TestDecoderAgreesWithProtojson(t *testing.T) {
	d := NewDecoder()
	n := 0
	for file, lines := range sampleLines(t) {
		for i, line := range lines {
			want, werr := ParseResponseJSON(line)
			got, gerr := d.Decode(line)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%s:%d: protojson err=%v, fast err=%v", file, i+1, werr, gerr)
			}
			if werr != nil {
				t.Fatalf("%s:%d: sample rejected: %v", file, i+1, werr)
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("%s:%d: records differ\nprotojson: %+v\nfast:      %+v", file, i+1, want, got)
			}
			n++
		}
	}
	if n < 1916 {
		t.Fatalf("compared %d lines, want at least 1916", n)
	}
}

func TestDecoderFields(t *testing.T) {
	line := []byte(`{"flow":{"time":"2025-07-15T01:30:19.361221854Z","uuid":"c2ecde95","verdict":"DROPPED","drop_reason":133,"IP":{"source":"10.244.3.30","destination":"1.1.1.1","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":48748,"destination_port":80,"flags":{"SYN":true}}},"source":{"ID":1238,"identity":24009,"namespace":"cilium-test-5","labels":["k8s:kind=client","k8s:name=client"],"pod_name":"client-645b68dcf7-2jmrw","workloads":[{"name":"client","kind":"Deployment"}]},"destination":{"identity":9,"labels":["reserved:world-ipv4"]},"Type":"L3_L4","node_name":"kind-worker2","destination_names":["one.one.one.one"],"traffic_direction":"EGRESS","drop_reason_desc":"POLICY_DENIED","egress_denied_by":[{"name":"deny-all","namespace":"cilium-test-5"}]},"node_name":"kind-worker2","time":"2025-07-15T01:30:19.361221854Z"}`)
	got, err := NewDecoder().Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	want := schema.Flow{
		Time:       time.Date(2025, 7, 15, 1, 30, 19, 361221854, time.UTC),
		Node:       "kind-worker2",
		Source:     schema.SourceHubble,
		Verdict:    schema.VerdictDropped,
		DropReason: "POLICY_DENIED",
		Direction:  schema.DirectionEgress,
		IPVersion:  4,
		Protocol:   "TCP",
		SrcIP:      mustAddr("10.244.3.30"),
		DstIP:      mustAddr("1.1.1.1"),
		SrcPort:    48748,
		DstPort:    80,
		TCPFlags:   "SYN",
		Src: schema.Endpoint{Namespace: "cilium-test-5", Pod: "client-645b68dcf7-2jmrw", Workload: "client", WorkloadKind: "Deployment",
			Labels: map[string]string{"kind": "client", "name": "client"}, Identity: 24009},
		Dst:         schema.Endpoint{Workload: "world-ipv4", WorkloadKind: schema.KindReserved, Labels: map[string]string{"reserved:world-ipv4": ""}, Identity: 9},
		DstNames:    []string{"one.one.one.one"},
		PolicyNames: []string{"cilium-test-5/deny-all"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if !got.Dst.IsWorld() {
		t.Fatal("reserved:world-ipv4 must be world")
	}
}

func TestDecoderRejectsMalformed(t *testing.T) {
	good := `{"flow":{"time":"2021-06-16T16:52:13.136834446Z","verdict":"FORWARDED","IP":{"source":"10.0.2.16","destination":"10.0.2.1","ipVersion":"IPv4"}},"node_name":"n1"}`
	cases := map[string]string{
		"truncated":          good[:len(good)-10],
		"wrong type port":    `{"flow":{"time":"2021-06-16T16:52:13Z","l4":{"TCP":{"source_port":"eighty"}}}}`,
		"wrong type verdict": `{"flow":{"time":"2021-06-16T16:52:13Z","verdict":{"x":1}}}`,
		"binary junk":        "\x00\x01\x02\xff\xfe garbage",
		"invalid utf8":       "{\"flow\":{\"time\":\"2021-06-16T16:52:13Z\",\"node_name\":\"\xff\xfe\"}}",
		"bad ip":             `{"flow":{"time":"2021-06-16T16:52:13Z","IP":{"source":"10.0.2.999"}}}`,
		"bad time":           `{"flow":{"time":"yesterday"}}`,
		"no time":            `{"flow":{"verdict":"FORWARDED"}}`,
		"trailing data":      good + `}`,
		"deep nesting":       `{"flow":{"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}`,
		"empty":              ``,
		"port out of range":  `{"flow":{"time":"2021-06-16T16:52:13Z","l4":{"TCP":{"source_port":99999999999}}}}`,
	}
	d := NewDecoder()
	for name, line := range cases {
		if _, err := d.Decode([]byte(line)); err == nil {
			t.Errorf("%s: accepted %q", name, line)
		} else if errors.Is(err, ErrNoFlow) {
			t.Errorf("%s: reported as no-flow, want a rejection: %v", name, err)
		}
		if _, err := ParseResponseJSON([]byte(line)); err == nil {
			t.Errorf("%s: the protojson oracle accepted it too: the fast path is stricter than the reference", name)
		}
	}
	if _, err := d.Decode([]byte(good)); err != nil {
		t.Fatalf("good line after bad ones: %v", err)
	}
	// Values outside their type: rejected by both parsers, with the reason.
	const tm = `"time":"2021-06-16T16:52:13Z"`
	absurd := []struct{ name, line, reason string }{
		{"year 2300", `{"flow":{"time":"2300-01-01T00:00:00Z"}}`, schema.ReasonTimeRange},
		{"year 1600", `{"flow":{"time":"1600-01-01T00:00:00Z"}}`, schema.ReasonTimeRange},
		{"year 2300 outer", `{"flow":{"verdict":"FORWARDED"},"time":"2300-01-01T00:00:00.5Z"}`, schema.ReasonTimeRange},
		{"port 70000", `{"flow":{` + tm + `,"l4":{"TCP":{"source_port":70000}}}}`, schema.ReasonPortRange},
		{"udp port 65536", `{"flow":{` + tm + `,"l4":{"UDP":{"destination_port":65536}}}}`, schema.ReasonPortRange},
		{"verdict BOGUS", `{"flow":{` + tm + `,"verdict":"BOGUS"}}`, schema.ReasonVerdict},
		{"verdict 99", `{"flow":{` + tm + `,"verdict":99}}`, schema.ReasonVerdict},
		{"NUL in pod", `{"flow":{` + tm + `,"source":{"pod_name":"a\u0000b"}}}`, schema.ReasonControlChar},
		{"ESC in namespace", `{"flow":{` + tm + `,"destination":{"namespace":"\u001b[31mx"}}}`, schema.ReasonControlChar},
		{"NUL in label", `{"flow":{` + tm + `,"source":{"labels":["k8s:app=a\u0000"]}}}`, schema.ReasonControlChar},
		{"C1 in node", `{"flow":{` + tm + `,"node_name":"n\u0085"}}`, schema.ReasonControlChar},
		{"NUL in DNS name", `{"flow":{` + tm + `,"destination_names":["a\u0000.com"]}}`, schema.ReasonControlChar},
		{"NUL in URL path", `{"flow":{` + tm + `,"l7":{"http":{"url":"http://h/a\u0000"}}}}`, schema.ReasonControlChar},
		{"rcode 70000", `{"flow":{` + tm + `,"l7":{"dns":{"rcode":70000}}}}`, schema.ReasonValueRange},
		{"HTTP code 1000", `{"flow":{` + tm + `,"l7":{"http":{"code":1000}}}}`, schema.ReasonValueRange},
		{"latency 100 days", `{"flow":{` + tm + `,"l7":{"latency_ns":8640000000000000}}}`, schema.ReasonValueRange},
	}
	for _, c := range absurd {
		for i := 0; i < 2; i++ { // twice: a cached string must not let the line in
			_, err := d.Decode([]byte(c.line))
			if err == nil {
				t.Errorf("%s: fast decoder accepted %s", c.name, c.line)
			} else if got := RejectReason(err); got != c.reason {
				t.Errorf("%s: fast decoder's reason %q (%v), want %q", c.name, got, err, c.reason)
			}
		}
		_, err := ParseResponseJSON([]byte(c.line))
		if err == nil {
			t.Errorf("%s: protojson oracle accepted %s", c.name, c.line)
		} else if got := RejectReason(err); got != c.reason {
			t.Errorf("%s: oracle's reason %q (%v), want %q", c.name, got, err, c.reason)
		}
	}
	// The edges of the ranges are accepted by both.
	for _, line := range []string{
		`{"flow":{"time":"2262-04-11T23:47:16Z","l4":{"TCP":{"source_port":65535}},"verdict":7}}`,
		`{"flow":{"time":"1900-01-01T00:00:00Z","l7":{"http":{"code":999}},"source":{"pod_name":"é-ü"}}}`,
		// Several record types in one query are comma-joined by both; none is "".
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"x.example.com.","qtypes":["A","TXT"]}}}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"x.example.com.","qtypes":[]}}}}`,
	} {
		got, err := d.Decode([]byte(line))
		if err != nil {
			t.Errorf("fast decoder refused %s: %v", line, err)
		}
		want, err := ParseResponseJSON([]byte(line))
		if err != nil {
			t.Errorf("oracle refused %s: %v", line, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoders differ\nfast: %+v\noracle: %+v", line, got, want)
		}
	}
	if _, err := d.Decode([]byte(`{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":3}}`)); !errors.Is(err, ErrNoFlow) {
		t.Fatalf("lost_events: got %v, want ErrNoFlow", err)
	}
}

// Both parsers fill DNSQType from l7.dns.qtypes, joining several with ",".
func TestDNSQType(t *testing.T) {
	for line, want := range map[string]string{
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"x.example.com.","qtypes":["TXT"]}}}}`:      "TXT",
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"x.example.com.","qtypes":["A","AAAA"]}}}}`: "A,AAAA",
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"x.example.com."}}}}`:                       "",
	} {
		fast, err := NewDecoder().Decode([]byte(line))
		if err != nil || fast.DNSQType != want {
			t.Errorf("fast decoder: %q, %v; want %q", fast.DNSQType, err, want)
		}
		oracle, err := ParseResponseJSON([]byte(line))
		if err != nil || oracle.DNSQType != want {
			t.Errorf("protojson: %q, %v; want %q", oracle.DNSQType, err, want)
		}
	}
}

// TestDecoderEndpointCache: an endpoint object read before is taken from
// the cache, for either side, and what follows it is still read and
// checked; an object that differs by one byte is read afresh.
func TestDecoderEndpointCache(t *testing.T) {
	const tm = `"time":"2021-06-16T16:52:13Z"`
	ep := `{"ID":881,"identity":3418,"namespace":"bookinfo","labels":["k8s:app=productpage","k8s:io.kubernetes.pod.namespace=bookinfo"],"pod_name":"productpage-v1-6b746f74dc-9rcxx"}`
	d := NewDecoder()
	first, err := d.Decode([]byte(`{"flow":{` + tm + `,"source":` + ep + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.endpoints) != 1 {
		t.Fatalf("%d endpoints cached, want 1", len(d.endpoints))
	}
	both, err := d.Decode([]byte(`{"flow":{` + tm + `,"source":` + ep + `,"destination":` + ep + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(both.Src, first.Src) || !reflect.DeepEqual(both.Dst, first.Src) || both.Src.Workload != "productpage-v1" {
		t.Fatalf("cached endpoint differs: %+v / %+v, want %+v", both.Src, both.Dst, first.Src)
	}
	for _, bad := range []string{
		`{"flow":{` + tm + `,"source":` + ep + `,"l4":{"TCP":{"source_port":"eighty"}}}}`,
		`{"flow":{` + tm + `,"source":` + ep + `}`,
		`{"flow":{` + tm + `,"source":` + ep + `x}}`,
	} {
		if _, err := d.Decode([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	other := strings.Replace(ep, "9rcxx", "9rcxy", 1)
	f, err := d.Decode([]byte(`{"flow":{` + tm + `,"source":` + other + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Src.Pod != "productpage-v1-6b746f74dc-9rcxy" || len(d.endpoints) != 2 {
		t.Fatalf("a changed object read as %q (%d cached)", f.Src.Pod, len(d.endpoints))
	}
}

// TestDecoderEndpointCacheRepeatedKey: a line that repeats "source" reads
// the second object over the first, with or without the first taken from
// the cache: the workload is that of the pod the line names last.
func TestDecoderEndpointCacheRepeatedKey(t *testing.T) {
	const tm = `"time":"2021-06-16T16:52:13Z"`
	a := `{"namespace":"bookinfo","pod_name":"productpage-v1-6b746f74dc-9rcxx"}`
	b := `{"namespace":"bookinfo","pod_name":"reviews-v2-7bf8c9648f-zrl6d"}`
	line := []byte(`{"flow":{` + tm + `,"source":` + a + `,"source":` + b + `}}`)
	want, err := NewDecoder().Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	if want.Src.Pod != "reviews-v2-7bf8c9648f-zrl6d" || want.Src.Workload != "reviews-v2" {
		t.Fatalf("without the cache: %+v", want.Src)
	}
	d := NewDecoder()
	if _, err := d.Decode([]byte(`{"flow":{` + tm + `,"source":` + a + `}}`)); err != nil {
		t.Fatal(err)
	}
	got, err := d.Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Src, want.Src) {
		t.Fatalf("with the first object cached: %+v, want %+v", got.Src, want.Src)
	}
}
