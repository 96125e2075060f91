package flowfile_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/flowfile"
	"github.com/flowwarden/flowwarden/schema"
)

func TestCheckTellsKindsByContent(t *testing.T) {
	dir := t.TempDir()
	hubbleLine, err := os.ReadFile("../../testdata/hubble/basic-sample-10-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(hubbleLine)
	_ = zw.Close()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	envoyJSON := `{"start_time":"2026-11-25T21:26:18.409Z","method":"GET","path":"/","protocol":"HTTP/1.1","response_code":200,"bytes_received":0,"bytes_sent":10,"duration":3,"upstream_cluster":"outbound|80||web.default.svc.cluster.local","upstream_host":"10.0.0.2:80","downstream_remote_address":"10.0.0.1:40000"}` + "\n"
	files := []flowfile.File{
		{Path: "../../testdata/istio-envoy/istio-text-accesslog-official-docs.log"},
		{Path: write("compressed-without-suffix", gz.Bytes())},
		{Path: write("envoy.json", []byte("\n"+envoyJSON))},
		{Path: "../../testdata/hubble/basic-sample-10-flows.json"},
	}
	got, err := flowfile.Check(files)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, f := range got {
		kinds = append(kinds, filepath.Base(f.Path)+"="+f.Kind.String())
	}
	want := "compressed-without-suffix=Hubble JSON basic-sample-10-flows.json=Hubble JSON istio-text-accesslog-official-docs.log=Envoy access log envoy.json=Envoy access log"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("got %s\nwant %s", strings.Join(kinds, " "), want)
	}
	// Each is read whole, the compressed one too.
	counts := map[string]int{}
	for _, f := range got {
		var stats ingest.Stats
		sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error { counts[filepath.Base(f.Path)] += len(fs); return nil })
		if err := flowfile.Read(context.Background(), f, flowfile.Options{Workers: 2}, ingest.NewIdentityCache(0, 0), sink, &stats); err != nil {
			t.Fatal(err)
		}
	}
	if counts["compressed-without-suffix"] != 10 || counts["basic-sample-10-flows.json"] != 10 || counts["envoy.json"] != 1 || counts["istio-text-accesslog-official-docs.log"] != 2 {
		t.Fatalf("flows read: %v", counts)
	}

	_, err = flowfile.Check([]flowfile.File{
		{Path: filepath.Join(dir, "missing"), From: "--hubble-file", Kind: flowfile.Hubble},
		{Path: write("notes.txt", []byte("hello\n")), From: "file"},
		{Path: dir, From: "file"},
		{Path: "../../testdata/scenarios/beacon-c2.flows.jsonl.gz", From: "file"},
		{Path: write("empty.json", []byte("\n\n")), From: "file"},
	})
	for _, want := range []string{"empty.json: empty (no line to tell its kind by)", "--hubble-file " + filepath.Join(dir, "missing"), "notes.txt: neither", dir + ": is a directory", "beacon-c2.flows.jsonl.gz: compact flow records of the detectors' tests"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// The rotated parts of one recording, named newest first as a glob names
// hubble.log, hubble.log.1, hubble.log.2 (one gzip-compressed), are read
// oldest first; Hubble files stay before Envoy logs, a file with no flow
// comes first and standard input after the regular files of its kind.
func TestInTimeOrder(t *testing.T) {
	sample, err := os.ReadFile("../../testdata/hubble/basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.TrimSpace(sample), []byte("\n"))
	third := len(lines) / 3
	dir := t.TempDir()
	write := func(name string, ls [][]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(ls, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldest := write("hubble.log.2", lines[:third])
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bytes.Join(lines[third:2*third], nil))
	_ = zw.Close()
	middle := filepath.Join(dir, "hubble.log.1")
	if err := os.WriteFile(middle, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	newest := write("hubble.log", lines[2*third:])
	// A Hubble record that is no flow (lost events) passes Check but holds none.
	noFlow := write("lost.json", [][]byte{[]byte(`{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":3},"node_name":"n1","time":"2021-10-04T14:00:00Z"}` + "\n")})
	envoyLog := "../../testdata/istio-envoy/istio-text-accesslog-official-docs.log"
	checked, err := flowfile.Check([]flowfile.File{{Path: envoyLog}, {Path: "-", Kind: flowfile.Hubble}, {Path: newest}, {Path: middle}, {Path: noFlow}, {Path: oldest}})
	if err != nil {
		t.Fatal(err)
	}
	ordered, err := flowfile.InTimeOrder(context.Background(), checked)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range ordered {
		got = append(got, f.Path)
	}
	want := []string{noFlow, oldest, middle, newest, "-", envoyLog}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("order %v, want %v", got, want)
	}
	first, ok, err := flowfile.FirstFlow(context.Background(), checked[2]) // hubble.log.1, compressed
	if err != nil || !ok || !first.Equal(mustTime(t, lines[third])) {
		t.Errorf("first flow of %s: %s %v %v, want %s", checked[2].Path, first, ok, err, mustTime(t, lines[third]))
	}
}

func mustTime(t *testing.T, line []byte) time.Time {
	t.Helper()
	var rec struct {
		Flow struct{ Time time.Time } `json:"flow"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.Flow.Time
}
