package clickhouse

import (
	"errors"
	"math"

	"github.com/ClickHouse/ch-go/proto"
)

// lowCardinality is a LowCardinality(String) column for inserts that builds
// its dictionary as rows are appended: a row costs a 4-byte key (ch-go's
// own column keeps a string header per row, which the garbage collector
// scans, and builds the dictionary when the block is encoded). Rows that
// repeat the previous row's value, common for node, source, verdict and
// namespaces, skip the dictionary look-up. It is encoded as ch-go encodes
// proto.ColLowCardinality (shared dictionary with additional keys, keys as
// narrow as the dictionary allows).
type lowCardinality struct {
	dict  map[string]uint32
	index proto.ColStr // the dictionary, in key order
	keys  []uint32     // one per row

	last    string
	lastKey uint32
	hasLast bool

	// Filled by Prepare for encoding.
	key    proto.CardinalityKey
	keys8  proto.ColUInt8
	keys16 proto.ColUInt16
	keys32 proto.ColUInt32
}

var _ proto.ColumnOf[string] = (*lowCardinality)(nil)

func newLowCardinality() *lowCardinality {
	return &lowCardinality{dict: map[string]uint32{}}
}

// Serialization constants of LowCardinality columns in the native protocol
// (ClickHouse's SerializationLowCardinality; ch-go keeps its own unexported).
const (
	lcSharedDictionariesWithAdditionalKeys = 1
	lcHasAdditionalKeys                    = 1 << 9
	lcNeedUpdateDictionary                 = 1 << 10
)

func (c *lowCardinality) Append(v string) {
	if c.hasLast && v == c.last {
		c.keys = append(c.keys, c.lastKey)
		return
	}
	k := c.intern(v)
	c.keys = append(c.keys, k)
	c.last, c.lastKey, c.hasLast = v, k, true
}

// intern returns v's dictionary key, adding v to the dictionary if it is
// new, without adding a row.
func (c *lowCardinality) intern(v string) uint32 {
	k, ok := c.dict[v]
	if !ok {
		k = uint32(len(c.dict))
		c.dict[v] = k
		c.index.Append(v)
	}
	return k
}

func (c *lowCardinality) AppendArr(vs []string) {
	for _, v := range vs {
		c.Append(v)
	}
}

func (c *lowCardinality) Row(i int) string { return c.index.Row(int(c.keys[i])) }

func (c *lowCardinality) Rows() int { return len(c.keys) }

func (c *lowCardinality) Type() proto.ColumnType {
	return proto.ColumnTypeLowCardinality.Sub(proto.ColumnTypeString)
}

func (c *lowCardinality) Reset() {
	clear(c.dict)
	c.index.Reset()
	c.keys = c.keys[:0]
	c.last, c.lastKey, c.hasLast = "", 0, false
	c.keys8, c.keys16, c.keys32 = c.keys8[:0], c.keys16[:0], c.keys32[:0]
}

// Prepare narrows the keys for encoding; it may run again (a retried insert).
func (c *lowCardinality) Prepare() error {
	c.keys8, c.keys16, c.keys32 = c.keys8[:0], c.keys16[:0], c.keys32[:0]
	switch n := len(c.dict); {
	case n <= math.MaxUint8+1:
		c.key = proto.KeyUInt8
		for _, k := range c.keys {
			c.keys8 = append(c.keys8, uint8(k))
		}
	case n <= math.MaxUint16+1:
		c.key = proto.KeyUInt16
		for _, k := range c.keys {
			c.keys16 = append(c.keys16, uint16(k))
		}
	default:
		c.key = proto.KeyUInt32
		c.keys32 = append(c.keys32, c.keys...)
	}
	return nil
}

func (c *lowCardinality) EncodeState(b *proto.Buffer) {
	b.PutInt64(lcSharedDictionariesWithAdditionalKeys)
}

func (c *lowCardinality) keyColumn() proto.ColInput {
	switch c.key {
	case proto.KeyUInt8:
		return &c.keys8
	case proto.KeyUInt16:
		return &c.keys16
	default:
		return &c.keys32
	}
}

func (c *lowCardinality) EncodeColumn(b *proto.Buffer) {
	if c.Rows() == 0 {
		return
	}
	b.PutInt64(lcHasAdditionalKeys | lcNeedUpdateDictionary | int64(c.key))
	b.PutInt64(int64(c.index.Rows()))
	c.index.EncodeColumn(b)
	b.PutInt64(int64(c.Rows()))
	c.keyColumn().EncodeColumn(b)
}

func (c *lowCardinality) WriteColumn(w *proto.Writer) {
	if c.Rows() == 0 {
		return
	}
	w.ChainBuffer(func(b *proto.Buffer) {
		b.PutInt64(lcHasAdditionalKeys | lcNeedUpdateDictionary | int64(c.key))
		b.PutInt64(int64(c.index.Rows()))
	})
	c.index.WriteColumn(w)
	w.ChainBuffer(func(b *proto.Buffer) {
		b.PutInt64(int64(c.Rows()))
	})
	c.keyColumn().WriteColumn(w)
}

// DecodeColumn is not supported: the column only carries inserts.
func (c *lowCardinality) DecodeColumn(*proto.Reader, int) error {
	return errors.New("lowCardinality: insert-only column")
}
