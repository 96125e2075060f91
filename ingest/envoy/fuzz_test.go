package envoy

import (
	"bufio"
	"os"
	"testing"
)

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
	var p Parser
	f.Fuzz(func(t *testing.T, line []byte) {
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
