package clickhouse

import (
	"bytes"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/flowwarden/flowwarden/schema"
)

// TestLabelsColumnEncodesAsChGo: the labels column puts on the wire the
// bytes ch-go's ColMap puts there for the same entries, and ch-go reads back
// every row's map, for shared maps (the common case), a fresh map per row,
// nil and empty maps, through both encoding paths, again after a Reset and
// after a second Prepare (a retried insert).
func TestLabelsColumnEncodesAsChGo(t *testing.T) {
	shared := make([]map[string]string, 40)
	for i := range shared {
		m := map[string]string{}
		for j := range i % 5 {
			m["k8s:app"+strconv.Itoa(j)] = "v" + strconv.Itoa(i)
		}
		if i == 7 {
			m = nil
		}
		shared[i] = m
	}
	var rows []map[string]string
	for i := range 3000 {
		switch {
		case i%11 == 0: // a map of its own, seen once
			rows = append(rows, map[string]string{"io.kubernetes.pod.namespace": "ns" + strconv.Itoa(i), "k8s:x": ""})
		case i%5 == 0: // runs of the same map
			rows = append(rows, shared[(i/5)%3], shared[(i/5)%3])
		default:
			rows = append(rows, shared[(i*7)%len(shared)])
		}
	}
	encode := func(c proto.ColInput) []byte {
		if err := c.(proto.Preparable).Prepare(); err != nil {
			t.Fatal(err)
		}
		var b proto.Buffer
		c.(proto.StateEncoder).EncodeState(&b)
		c.EncodeColumn(&b)
		return b.Buf
	}
	write := func(c proto.ColInput) []byte {
		if err := c.(proto.Preparable).Prepare(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		b := new(proto.Buffer)
		c.(proto.StateEncoder).EncodeState(b)
		out.Write(b.Buf)
		w := proto.NewWriter(&out, new(proto.Buffer))
		c.WriteColumn(w)
		if _, err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	ours := newLabelsColumn()
	for round := range 2 {
		for _, m := range rows {
			ours.Append(m)
		}
		if ours.Rows() != len(rows) {
			t.Fatalf("%d rows, want %d", ours.Rows(), len(rows))
		}
		// ch-go's column, fed each row's entries in the order ours holds them.
		theirs := proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
		for i := range rows {
			s := ours.sets[ours.rows[i]]
			r := proto.NewReader(bytes.NewReader(s.values))
			var kv []proto.KV[string, string]
			for _, k := range s.names {
				v, err := r.Str()
				if err != nil {
					t.Fatal(err)
				}
				kv = append(kv, proto.KV[string, string]{Key: ours.names.index.Row(int(k)), Value: v})
			}
			theirs.AppendKV(kv)
		}
		if ours.Type() != theirs.Type() {
			t.Fatalf("type %s, want %s", ours.Type(), theirs.Type())
		}
		want := encode(theirs)
		if got := encode(ours); !bytes.Equal(got, want) {
			t.Fatalf("round %d: EncodeColumn differs from ch-go's", round)
		}
		if got := encode(ours); !bytes.Equal(got, want) {
			t.Fatalf("round %d: a second Prepare changed the encoding", round)
		}
		if got := write(ours); !bytes.Equal(got, want) {
			t.Fatalf("round %d: WriteColumn differs from EncodeColumn", round)
		}
		// ch-go reads every row back as it was appended.
		back := proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
		r := proto.NewReader(bytes.NewReader(want))
		if err := back.DecodeState(r); err != nil {
			t.Fatal(err)
		}
		if err := back.DecodeColumn(r, len(rows)); err != nil {
			t.Fatal(err)
		}
		for i, m := range rows {
			if got := back.Row(i); !maps.Equal(got, m) {
				t.Fatalf("round %d: row %d reads back %v, want %v", round, i, got, m)
			}
			if got := ours.Row(i); !maps.Equal(got, m) {
				t.Fatalf("round %d: Row(%d) = %v, want %v", round, i, got, m)
			}
		}
		ours.Reset()
		if ours.Rows() != 0 || len(ours.sets) != 1 || len(ours.ids) != 0 {
			t.Fatalf("Reset left %d rows, %d sets", ours.Rows(), len(ours.sets))
		}
	}
	t.Run("only empty maps", func(t *testing.T) {
		ours := newLabelsColumn()
		theirs := proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
		for range 3 {
			ours.Append(nil)
			ours.Append(map[string]string{})
			theirs.Append(nil)
			theirs.Append(map[string]string{})
		}
		if !bytes.Equal(encode(ours), encode(theirs)) {
			t.Fatal("rows of empty maps differ from ch-go's")
		}
	})
}

// TestColumnsCountBySourceAndVerdict: the batch's tally for the written
// metric counts every row once under its own source and verdict, across
// runs of one pair and returns to pairs seen before.
func TestColumnsCountBySourceAndVerdict(t *testing.T) {
	c := newColumns()
	want := map[[2]string]int{}
	pairs := [][2]string{{"hubble", "FORWARDED"}, {"hubble", "DROPPED"}, {"envoy", "FORWARDED"}, {"conntrack", "FORWARDED"}}
	for i := range 1000 {
		p := pairs[(i/7+i%3/2)%len(pairs)]
		c.add(&schema.Flow{Time: time.Unix(int64(i), 0), Source: schema.SourceKind(p[0]), Verdict: schema.Verdict(p[1])})
		want[p]++
	}
	got := map[[2]string]int{}
	c.counts(func(source, verdict string, n int) { got[[2]string{source, verdict}] += n })
	if !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}
