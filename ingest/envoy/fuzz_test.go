package envoy

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"
)

// jsonOracle: a JSON line the parser accepts, encoding/json reads to the
// same entry; one encoding/json reads and the parser refuses holds
// something the parser refuses on purpose (invalid UTF-8 or a lone
// surrogate, which encoding/json replaces; nesting deeper than jsonscan's
// bound).
func jsonOracle(t *testing.T, p *JSONParser, line []byte) {
	got, gerr := p.Parse(line)
	want, werr := oracleJSON(line)
	switch {
	case gerr == nil && werr != nil:
		t.Fatalf("parser accepted what encoding/json refuses (%v): %q", werr, line)
	case gerr == nil && got != want:
		t.Fatalf("%q:\nparser        %+v\nencoding/json %+v", line, got, want)
	case gerr != nil && werr == nil:
		if m := gerr.Error(); !strings.Contains(m, "UTF-8") && !strings.Contains(m, "surrogate") && !strings.Contains(m, "nesting") {
			t.Fatalf("parser refused (%v) what encoding/json reads: %q", gerr, line)
		}
	}
}

// FuzzParse feeds hostile lines to the text and JSON parsers, seeded with
// the published samples: no panic, an accepted line has a time, and its flow
// holds only values inside their types (schema.Flow.Validate): the time in
// range, valid UTF-8 without control characters in names.
func FuzzParse(f *testing.F) {
	for _, file := range sampleFiles(f) {
		fh, err := os.Open(file)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, MaxLineBytes), MaxLineBytes)
		for sc.Scan() {
			f.Add(append([]byte(nil), sc.Bytes()...))
		}
		fh.Close()
	}
	f.Add([]byte(`[2020-11-25T21:26:18.409Z] "`))
	f.Add([]byte(`{"start_time":"2020-11-25T21:26:18.409Z","response_code":99999}`))
	f.Add([]byte(`{"start_time":"2300-11-25T21:26:18.409Z","authority":"a\u0000","upstream_host":"10.0.0.1:70000"}`))
	f.Add([]byte("[2020-11-25T21:26:18.409Z] \"GET /\x01\xff HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"c\" \"8\" \"h:80\" \"10.44.1.27:70000\" outbound|80000||h 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default"))
	f.Add([]byte(`{"start_time":"2020-11-25T21:26:18.409Z","path":"/a","path":null}`))
	f.Add([]byte("{\"start_time\":\"2020-11-25T21:26:18.409Z\"}\x00"))
	var p Parser
	var jp JSONParser
	f.Fuzz(func(t *testing.T, line []byte) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")) {
			jsonOracle(t, &jp, line)
		}
		a, err := p.Parse(line)
		if err != nil {
			_ = RejectReason(err)
			return
		}
		if a.StartTime.IsZero() {
			t.Fatal("accepted an entry without a time")
		}
		fl := ToFlow(&a)
		if fl.Source != "envoy" {
			t.Fatal("wrong source")
		}
		if err := fl.Validate(); err != nil {
			t.Fatalf("accepted a value outside its type: %v in %q", err, line)
		}
	})
}
