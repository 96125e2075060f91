package hubble

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds hostile lines to the fast decoder, seeded with every
// published sample and the malformed cases. It must never panic or hang;
// a line it accepts has a time; and where protojson also accepts a line,
// both must produce the same record.
func FuzzDecode(f *testing.F) {
	// A few lines of each sample file: the shapes, not the volume.
	for _, lines := range sampleLines(f) {
		for i, l := range lines {
			if i%100 == 0 {
				f.Add(l)
			}
		}
	}
	for _, s := range []string{"", "{", `{"flow":null}`, `{"flow":{"time":"2021-06-16T16:52:13Z"}}`, "\xff\xfe",
		`{"flow":{"time":"2021-06-16T16:52:13Z","source":{"labels":["k8s:a=b","reserved:world"]}}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","l4":{"TCP":{"source_port":"80","flags":{"SYN":true}}}}}`} {
		f.Add([]byte(s))
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := d.Decode(line)
		if err != nil {
			if errors.Is(err, ErrNoFlow) || err.Error() != "" {
				return
			}
			t.Fatal("error without a message")
		}
		if got.Time.IsZero() {
			t.Fatal("accepted a flow without a time")
		}
		// A second decoder (fresh caches) must agree with the warmed one.
		again, err := NewDecoder().Decode(bytes.Clone(line))
		if err != nil || !reflect.DeepEqual(got, again) {
			t.Fatalf("decoders disagree: %v", err)
		}
		if want, werr := ParseResponseJSON(line); werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("fast decoder and protojson disagree on %q\nfast: %+v\nprotojson: %+v", line, got, want)
		}
	})
}
