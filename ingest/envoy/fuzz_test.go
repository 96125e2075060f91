package envoy

import (
	"bufio"
	"os"
	"testing"
)

// FuzzParse feeds hostile lines to the text and JSON parsers, seeded with
// the published samples: no panic, and an accepted line has a time.
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
	})
}
