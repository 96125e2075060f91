package clickhouse

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/ClickHouse/ch-go/proto"
)

// TestLowCardinalityEncodesAsChGo: the writer's LowCardinality(String)
// column puts on the wire exactly the bytes ch-go's own column puts there
// for the same rows (state, dictionary, keys), for every key width, alone
// and nested in Array and Map, through both of ch-go's encoding paths, and
// again after a Reset.
func TestLowCardinalityEncodesAsChGo(t *testing.T) {
	rows := func(n, distinct int) []string {
		var vs []string
		for i := range n {
			// Runs of repeats (the previous-row shortcut) and returns to
			// values seen before (the dictionary).
			vs = append(vs, "v"+strconv.Itoa((i/3)%distinct))
		}
		return vs
	}
	cases := map[string][]string{
		"empty":   nil,
		"one":     {""},
		"uint8":   rows(1000, 256),
		"uint16":  rows(3*257, 257),
		"uint16+": rows(3*65536, 65536),
		"uint32":  rows(3*65537, 65537),
	}
	encode := func(c proto.ColInput) []byte {
		if p, ok := c.(proto.Preparable); ok {
			if err := p.Prepare(); err != nil {
				t.Fatal(err)
			}
		}
		var b proto.Buffer
		if s, ok := c.(proto.StateEncoder); ok {
			s.EncodeState(&b)
		}
		c.EncodeColumn(&b)
		return b.Buf
	}
	write := func(c proto.ColInput) []byte {
		if p, ok := c.(proto.Preparable); ok {
			if err := p.Prepare(); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		w := proto.NewWriter(&out, new(proto.Buffer))
		c.WriteColumn(w)
		if _, err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	for name, vs := range cases {
		t.Run(name, func(t *testing.T) {
			ours, theirs := newLowCardinality(), new(proto.ColStr).LowCardinality()
			for round := range 2 { // the second round after a Reset
				for _, v := range vs {
					ours.Append(v)
					theirs.Append(v)
				}
				if ours.Rows() != len(vs) {
					t.Fatalf("round %d: %d rows, want %d", round, ours.Rows(), len(vs))
				}
				for i, v := range vs {
					if ours.Row(i) != v {
						t.Fatalf("round %d: row %d is %q, want %q", round, i, ours.Row(i), v)
					}
				}
				if ours.Type() != theirs.Type() {
					t.Fatalf("type %s, want %s", ours.Type(), theirs.Type())
				}
				if !bytes.Equal(encode(ours), encode(theirs)) {
					t.Fatalf("round %d: EncodeColumn differs from ch-go's", round)
				}
				if !bytes.Equal(encode(ours), encode(theirs)) {
					t.Fatalf("round %d: a second Prepare changed the encoding", round)
				}
				if !bytes.Equal(write(ours), write(theirs)) {
					t.Fatalf("round %d: WriteColumn differs from ch-go's", round)
				}
				ours.Reset()
				theirs.Reset()
			}
		})
	}
	t.Run("nested", func(t *testing.T) {
		arrOurs, arrTheirs := proto.NewArray[string](newLowCardinality()), new(proto.ColStr).LowCardinality().Array()
		mapOurs := proto.NewMap[string, string](newLowCardinality(), new(proto.ColStr))
		mapTheirs := proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
		for i := range 500 {
			arr := []string{"a" + strconv.Itoa(i%7), "b", "a" + strconv.Itoa(i%3)}[:i%4%3]
			arrOurs.Append(arr)
			arrTheirs.Append(arr)
			// One key per map: Go's map order is random, so one key keeps
			// the two columns' rows in the same order.
			m := map[string]string{"k" + strconv.Itoa(i%11): strconv.Itoa(i)}
			mapOurs.Append(m)
			mapTheirs.Append(m)
		}
		if !bytes.Equal(encode(arrOurs), encode(arrTheirs)) {
			t.Fatal("Array(LowCardinality(String)) differs from ch-go's")
		}
		if !bytes.Equal(encode(mapOurs), encode(mapTheirs)) {
			t.Fatal("Map(LowCardinality(String), String) differs from ch-go's")
		}
	})
}
