package clickhouse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// The spool's record payload (segments opened by segmentMagic): flows in a
// fixed field order, integers as varints, strings, addresses and lists
// length-prefixed. It replaces gob (segmentMagicGob), which spent a quarter
// of serve's CPU at saturation: gob sends its type description with every
// record (each record must decode on its own) and walks the struct by
// reflection. A field added to schema.Flow must be added here too;
// TestSpoolCodecRoundTrip fills every field by reflection and fails otherwise.
//
// Label sets are written once per record (segmentMagic, FWSPOOL5): the
// sources share one map per distinct label list, so a record of 4,096
// flows holds a few dozen sets, and an endpoint refers to its set by
// number: 0 for none, one past the sets so far for a new set that follows
// inline, or the number of one written before. Records of FWSPOOL4 and
// FWSPOOL3 write every endpoint's labels inline (labelRefs nil).

// labelRefs numbers the label maps written so far in a record, by the
// map's identity (maps are never modified after creation).
type labelRefs map[uintptr]uint64

// appendFlows encodes flows after b, as one record.
func appendFlows(b []byte, flows []schema.Flow) []byte {
	b = binary.AppendUvarint(b, uint64(len(flows)))
	refs := labelRefs{}
	for i := range flows {
		b = appendFlow(b, &flows[i], refs)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendAddr(b []byte, a netip.Addr) []byte {
	n := len(b)
	b = append(b, 0)
	b, _ = a.AppendBinary(b) // never fails
	b[n] = byte(len(b) - n - 1)
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendEndpoint(b []byte, e *schema.Endpoint, refs labelRefs) []byte {
	b = appendString(b, e.Namespace)
	b = appendString(b, e.Pod)
	b = appendString(b, e.Workload)
	b = appendString(b, e.WorkloadKind)
	if refs != nil {
		if len(e.Labels) == 0 {
			b = append(b, 0)
			return binary.AppendUvarint(b, uint64(e.Identity))
		}
		id := reflect.ValueOf(e.Labels).Pointer()
		if n, ok := refs[id]; ok {
			b = binary.AppendUvarint(b, n)
			return binary.AppendUvarint(b, uint64(e.Identity))
		}
		refs[id] = uint64(len(refs) + 1)
		b = binary.AppendUvarint(b, uint64(len(refs)))
	}
	b = binary.AppendUvarint(b, uint64(len(e.Labels)))
	for k, v := range e.Labels {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	return binary.AppendUvarint(b, uint64(e.Identity))
}

// appendFlow encodes one flow; refs is the record's label sets (nil: the
// FWSPOOL4 encoding, labels inline).
func appendFlow(b []byte, f *schema.Flow, refs labelRefs) []byte {
	b = binary.AppendVarint(b, f.Time.Unix())
	b = binary.AppendUvarint(b, uint64(f.Time.Nanosecond()))
	b = appendString(b, f.Node)
	b = appendString(b, string(f.Source))
	b = appendString(b, string(f.Verdict))
	b = appendString(b, f.DropReason)
	b = appendString(b, string(f.Direction))
	b = appendBool(b, f.IsReply)
	b = append(b, f.IPVersion)
	b = appendString(b, f.Protocol)
	b = appendAddr(b, f.SrcIP)
	b = appendAddr(b, f.DstIP)
	b = binary.AppendUvarint(b, uint64(f.SrcPort))
	b = binary.AppendUvarint(b, uint64(f.DstPort))
	b = appendString(b, f.TCPFlags)
	b = appendEndpoint(b, &f.Src, refs)
	b = appendEndpoint(b, &f.Dst, refs)
	b = appendStrings(b, f.DstNames)
	b = appendString(b, f.L7Type)
	b = appendString(b, f.DNSQuery)
	b = binary.AppendUvarint(b, uint64(f.DNSRCode))
	b = appendString(b, f.HTTPMethod)
	b = appendString(b, f.HTTPPath)
	b = binary.AppendUvarint(b, uint64(f.HTTPStatus))
	b = binary.AppendUvarint(b, f.Bytes)
	b = binary.AppendUvarint(b, f.Packets)
	b = binary.AppendUvarint(b, uint64(f.DurationMs))
	b = appendBool(b, f.MTLS)
	b = appendString(b, f.SrcPrincipal)
	b = appendString(b, f.DstPrincipal)
	b = appendStrings(b, f.PolicyNames)
	b = appendString(b, f.TraceID)
	return appendString(b, f.DNSQType)
}

var errShortRecord = errors.New("spool record: truncated or malformed")

// flowDecoder decodes records; it interns strings across the records of a
// segment (namespaces, pods, labels repeat in nearly every flow), so a
// decoded segment holds each distinct string once.
type flowDecoder struct {
	b       []byte
	pos     int // read position in b (an index, not a reslice: no write barrier per field)
	err     error
	strings map[string]string
	// v3 reads segmentMagicV3's records, which end before DNSQType.
	v3 bool
	// inlineLabels reads records of FWSPOOL4 and FWSPOOL3, whose endpoints
	// carry their labels inline.
	inlineLabels bool
	// sets are the label sets of the record being read, by number - 1.
	sets []map[string]string
}

func (d *flowDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b[d.pos:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.pos += n
	return v
}

func (d *flowDecoder) varint() int64 {
	v, n := binary.Varint(d.b[d.pos:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.pos += n
	return v
}

func (d *flowDecoder) fail() {
	if d.err == nil {
		d.err = errShortRecord
	}
	d.pos = len(d.b)
}

func (d *flowDecoder) bytes(n uint64) []byte {
	if n > uint64(len(d.b)-d.pos) {
		d.fail()
		return nil
	}
	v := d.b[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return v
}

func (d *flowDecoder) byte() byte {
	if d.pos >= len(d.b) {
		d.fail()
		return 0
	}
	v := d.b[d.pos]
	d.pos++
	return v
}

func (d *flowDecoder) string() string {
	raw := d.bytes(d.uvarint())
	if len(raw) == 0 {
		return ""
	}
	if s, ok := d.strings[string(raw)]; ok {
		return s
	}
	s := string(raw)
	d.strings[s] = s
	return s
}

func (d *flowDecoder) stringList() []string {
	n := d.uvarint()
	if n == 0 || n > uint64(len(d.b)-d.pos) { // each string takes a byte at least
		if n != 0 {
			d.fail()
		}
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.string()
	}
	return out
}

func (d *flowDecoder) u16() uint16 {
	v := d.uvarint()
	if v > math.MaxUint16 {
		d.fail()
	}
	return uint16(v)
}

func (d *flowDecoder) u32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail()
	}
	return uint32(v)
}

func (d *flowDecoder) addr() netip.Addr {
	raw := d.bytes(uint64(d.byte()))
	var a netip.Addr
	if err := a.UnmarshalBinary(raw); err != nil {
		d.fail()
	}
	return a
}

func (d *flowDecoder) endpoint(e *schema.Endpoint) {
	e.Namespace = d.string()
	e.Pod = d.string()
	e.Workload = d.string()
	e.WorkloadKind = d.string()
	if !d.inlineLabels {
		switch ref := d.uvarint(); {
		case ref == 0:
		case ref <= uint64(len(d.sets)):
			e.Labels = d.sets[ref-1]
		case ref == uint64(len(d.sets))+1:
			d.labels(e)
			if e.Labels == nil { // a new set is never empty
				d.fail()
			}
			d.sets = append(d.sets, e.Labels)
		default:
			d.fail()
		}
		e.Identity = d.u32()
		return
	}
	d.labels(e)
	e.Identity = d.u32()
}

func (d *flowDecoder) labels(e *schema.Endpoint) {
	if n := d.uvarint(); n > 0 {
		if n > uint64(len(d.b)-d.pos) {
			d.fail()
		} else {
			e.Labels = make(map[string]string, n)
			for range n {
				k := d.string()
				e.Labels[k] = d.string()
			}
		}
	}
}

// decodeFlows decodes one record's payload and appends its flows to out.
func (d *flowDecoder) decodeFlows(payload []byte, out []schema.Flow) ([]schema.Flow, error) {
	if d.strings == nil {
		d.strings = map[string]string{}
	}
	d.b, d.pos, d.err = payload, 0, nil
	clear(d.sets)
	d.sets = d.sets[:0]
	n := d.uvarint()
	if n > uint64(len(payload)) {
		return out, fmt.Errorf("%w: %d flows in %d bytes", errShortRecord, n, len(payload))
	}
	start := len(out)
	// Grown in place (not appended from a temporary slice), and cleared:
	// a failed record leaves flows past len(out) half written.
	out = slices.Grow(out, int(n))[:start+int(n)]
	clear(out[start:])
	for i := start; i < len(out) && d.err == nil; i++ {
		f := &out[i]
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail()
		}
		f.Time = time.Unix(sec, int64(nsec)).UTC()
		f.Node = d.string()
		f.Source = schema.SourceKind(d.string())
		f.Verdict = schema.Verdict(d.string())
		f.DropReason = d.string()
		f.Direction = schema.Direction(d.string())
		f.IsReply = d.byte() != 0
		f.IPVersion = d.byte()
		f.Protocol = d.string()
		f.SrcIP = d.addr()
		f.DstIP = d.addr()
		f.SrcPort = d.u16()
		f.DstPort = d.u16()
		f.TCPFlags = d.string()
		d.endpoint(&f.Src)
		d.endpoint(&f.Dst)
		f.DstNames = d.stringList()
		f.L7Type = d.string()
		f.DNSQuery = d.string()
		f.DNSRCode = d.u16()
		f.HTTPMethod = d.string()
		f.HTTPPath = d.string()
		f.HTTPStatus = d.u16()
		f.Bytes = d.uvarint()
		f.Packets = d.uvarint()
		f.DurationMs = d.u32()
		f.MTLS = d.byte() != 0
		f.SrcPrincipal = d.string()
		f.DstPrincipal = d.string()
		f.PolicyNames = d.stringList()
		f.TraceID = d.string()
		if !d.v3 {
			f.DNSQType = d.string()
		}
	}
	if d.err == nil && d.pos != len(d.b) {
		d.err = fmt.Errorf("%w: %d bytes left over", errShortRecord, len(d.b)-d.pos)
	}
	if d.err != nil {
		return out[:start], d.err
	}
	return out, nil
}
