package hubble

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/flowwarden/flowwarden/schema"
)

// FuzzDecode feeds hostile lines to the fast decoder, seeded with every
// published sample and the malformed cases. It must never panic or hang;
// a line it accepts has a time and only values inside their types
// (schema.Flow.Validate); where protojson also accepts a line, both must
// produce the same record; and a value one refuses as outside its type
// (a schema.FieldError) the other refuses too.
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
		`{"flow":{"time":"2021-06-16T16:52:13Z","l4":{"TCP":{"source_port":"80","flags":{"SYN":true}}}}}`,
		`{"flow":{"time":"2300-01-01T00:00:00Z"}}`, `{"flow":{"time":"1677-09-21T00:12:43Z","verdict":2}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","verdict":"BOGUS","l4":{"UDP":{"destination_port":70000}}}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","verdict":99,"source":{"pod_name":"a\u0000b","labels":["k8s:x=\u0007"]}}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"latency_ns":"18446744073709551615","dns":{"rcode":65536,"query":"\u0085"}}}}`,
		`{"flow":{"time":"2021-06-16T16:52:13Z","l7":{"dns":{"query":"a.b.","qtypes":["TXT","",null,"NULL"]}}}}`} {
		f.Add([]byte(s))
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := d.Decode(line)
		if err != nil {
			var fe *schema.FieldError
			if errors.As(err, &fe) {
				if _, werr := ParseResponseJSON(line); werr == nil {
					t.Fatalf("fast decoder refused %q (%v), protojson accepted it", line, err)
				}
			}
			if errors.Is(err, ErrNoFlow) || err.Error() != "" {
				return
			}
			t.Fatal("error without a message")
		}
		if got.Time.IsZero() {
			t.Fatal("accepted a flow without a time")
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted a value outside its type: %v in %q", err, line)
		}
		// A second decoder (fresh caches) must agree with the warmed one.
		again, err := NewDecoder().Decode(bytes.Clone(line))
		if err != nil || !reflect.DeepEqual(got, again) {
			t.Fatalf("decoders disagree: %v", err)
		}
		want, werr := ParseResponseJSON(line)
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("fast decoder and protojson disagree on %q\nfast: %+v\nprotojson: %+v", line, got, want)
		}
		var fe *schema.FieldError
		if errors.As(werr, &fe) {
			t.Fatalf("protojson refused %q (%v), the fast decoder accepted it", line, werr)
		}
	})
}
