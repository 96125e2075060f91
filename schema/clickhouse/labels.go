package clickhouse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"

	"github.com/ClickHouse/ch-go/proto"
)

// labelsColumn is a Map(LowCardinality(String), String) column for inserts
// that encodes each distinct label map once per batch. The sources share
// one map per distinct label list (the decoders cache them, the spool keeps
// one per record), so most rows repeat a map already seen: such a row costs
// one identity look-up and a 4-byte set number, where ch-go's ColMap walks
// the map and appends every name and value again. The bytes on the wire are
// those of proto.ColMap with this package's lowCardinality keys and a
// proto.ColStr of values, each map's entries in the order it was first
// walked (TestLabelsColumnEncodesAsChGo).
type labelsColumn struct {
	rows []uint32           // the set of each row
	sets []labelsSet        // sets[0] is the empty set
	ids  map[uintptr]uint32 // a map's identity → its set
	// names is the dictionary of label names; Prepare fills its keys, one
	// per entry of every row.
	names *lowCardinality

	lastID  uintptr
	lastSet uint32
	hasLast bool

	// Filled by Prepare for encoding.
	offsets    proto.ColUInt64
	valueBytes int
}

// labelsSet is one label map as it is encoded.
type labelsSet struct {
	// m keeps the map alive while its identity is cached, so that its
	// address cannot be reused by another map within the batch.
	m      map[string]string
	names  []uint32 // dictionary keys of its names, in entry order
	values []byte   // its values as a String column encodes them
}

var _ proto.ColInput = (*labelsColumn)(nil)

func newLabelsColumn() *labelsColumn {
	return &labelsColumn{sets: []labelsSet{{}}, ids: map[uintptr]uint32{}, names: newLowCardinality()}
}

// Append adds a row holding m, which must not change afterwards (the
// sources never change a map once a flow holds it: it is shared).
func (c *labelsColumn) Append(m map[string]string) {
	if len(m) == 0 {
		c.rows = append(c.rows, 0)
		return
	}
	id := reflect.ValueOf(m).Pointer()
	if c.hasLast && id == c.lastID {
		c.rows = append(c.rows, c.lastSet)
		return
	}
	set, ok := c.ids[id]
	if !ok {
		set = uint32(len(c.sets))
		s := labelsSet{m: m, names: make([]uint32, 0, len(m))}
		for k, v := range m {
			s.names = append(s.names, c.names.intern(k))
			s.values = binary.AppendUvarint(s.values, uint64(len(v)))
			s.values = append(s.values, v...)
		}
		c.sets = append(c.sets, s)
		c.ids[id] = set
	}
	c.rows = append(c.rows, set)
	c.lastID, c.lastSet, c.hasLast = id, set, true
}

// Row returns row i's labels (for tests and debugging).
func (c *labelsColumn) Row(i int) map[string]string {
	s := c.sets[c.rows[i]]
	if len(s.names) == 0 {
		return map[string]string{}
	}
	out := make(map[string]string, len(s.names))
	r := proto.NewReader(bytes.NewReader(s.values))
	for _, k := range s.names {
		v, err := r.Str()
		if err != nil {
			panic(err)
		}
		out[c.names.index.Row(int(k))] = v
	}
	return out
}

func (c *labelsColumn) Rows() int { return len(c.rows) }

func (c *labelsColumn) Type() proto.ColumnType {
	return proto.ColumnTypeMap.Sub(c.names.Type(), proto.ColumnTypeString)
}

func (c *labelsColumn) Reset() {
	c.rows = c.rows[:0]
	clear(c.sets[1:]) // drop the maps
	c.sets = c.sets[:1]
	clear(c.ids)
	c.names.Reset()
	c.hasLast = false
	c.offsets = c.offsets[:0]
}

// Prepare lays out the offsets and the name keys of every row's entries; it
// may run again (a retried insert).
func (c *labelsColumn) Prepare() error {
	c.offsets = c.offsets[:0]
	c.names.keys = c.names.keys[:0]
	c.valueBytes = 0
	var n uint64
	for _, set := range c.rows {
		s := &c.sets[set]
		n += uint64(len(s.names))
		c.offsets = append(c.offsets, n)
		c.names.keys = append(c.names.keys, s.names...)
		c.valueBytes += len(s.values)
	}
	return c.names.Prepare()
}

func (c *labelsColumn) EncodeState(b *proto.Buffer) { c.names.EncodeState(b) }

func (c *labelsColumn) appendValues(buf []byte) []byte {
	buf = slices.Grow(buf, c.valueBytes)
	for _, set := range c.rows {
		buf = append(buf, c.sets[set].values...)
	}
	return buf
}

func (c *labelsColumn) EncodeColumn(b *proto.Buffer) {
	if c.Rows() == 0 {
		return
	}
	c.offsets.EncodeColumn(b)
	c.names.EncodeColumn(b)
	if len(c.names.keys) > 0 {
		b.Buf = c.appendValues(b.Buf)
	}
}

// WriteColumn encodes into the writer's buffer: the values are copied
// into one buffer either way.
func (c *labelsColumn) WriteColumn(w *proto.Writer) {
	if c.Rows() == 0 {
		return
	}
	w.ChainBuffer(c.EncodeColumn)
}

// DecodeColumn is not supported: the column only carries inserts.
func (c *labelsColumn) DecodeColumn(*proto.Reader, int) error {
	return errors.New("labelsColumn: insert-only column")
}
