package hubble

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowwarden/flowwarden/schema"
)

// wireDecoder turns GetFlowsResponse messages in protobuf wire format into
// flow records without building the protobuf messages: one pass over the
// bytes that reads only the fields fromProto reads, skips the others
// (checking only that they are well formed), and caches repeated strings,
// addresses and label sets. proto.Unmarshal with FromProto is its oracle:
// where that accepts a message, both give the same record, and a value
// FromProto refuses as outside its type (a schema.FieldError) this refuses
// too (TestWireDecoderAgreesWithFromProto, FuzzWireDecode). It is more
// lenient in one way: a field it does not read is not checked beyond its
// framing (proto.Unmarshal refuses, say, invalid UTF-8 in a skipped string).
//
// Decoding a flow this way allocates only the strings and label sets it
// has not seen before, where proto.Unmarshal allocates every message and
// string of the flow and FromProto copies again; on the observer's stream
// it was a third of serve's CPU. A wireDecoder is not safe for concurrent
// use.
type wireDecoder struct {
	strings   nameCache
	addrs     map[string]netip.Addr
	labels    map[string]wireLabels
	workloads map[string]podWorkload
	endpoints map[string]resolved // by the Endpoint message's bytes
	key       []byte
	qbuf      []byte
	wf        wireFlow
	// bad is set when a string of the flow being decoded is not a valid
	// name: then Validate runs and names it.
	bad bool
}

// maxEndpoints bounds the endpoint cache (keys are a few hundred bytes).
const maxEndpoints = 1 << 14

// podWorkload caches schema.WorkloadFromPod for a pod and its label set.
type podWorkload struct {
	labels     map[string]string // held, so that its identity is not reused
	name, kind string
}

// wireLabels is a label set built from a raw label list: the map, the
// reserved name for finishEndpoint, and whether every key and value is a
// valid name (schema.CheckName), so that Validate need not walk the map
// again for every flow.
type wireLabels struct {
	m        map[string]string
	reserved string
	valid    bool
}

// Caches are bounded like the JSON decoder's.
const maxAddrs = 1 << 16

func newWireDecoder() *wireDecoder {
	return &wireDecoder{strings: map[string]string{}, addrs: map[string]netip.Addr{}, labels: map[string]wireLabels{},
		workloads: map[string]podWorkload{}, endpoints: map[string]resolved{}}
}

// Field numbers of the messages read (cilium/api/v1/flow and observer).
const (
	respFlow       = 1
	respNodeStatus = 2
	respLostEvents = 3
	respNodeName   = 1000
	respTime       = 1001

	flowTime             = 1
	flowVerdict          = 2
	flowDropReason       = 3
	flowIP               = 5
	flowL4               = 6
	flowSource           = 8
	flowDestination      = 9
	flowNodeName         = 11
	flowDestinationNames = 14
	flowL7               = 15
	flowReply            = 16
	flowTrafficDirection = 22
	flowDropReasonDesc   = 25
	flowIsReply          = 26
	flowTraceContext     = 30
	flowEgressAllowedBy  = 21001
	flowIngressAllowedBy = 21002
	flowEgressDeniedBy   = 21004
	flowIngressDeniedBy  = 21005
)

// wireEndpoint holds an Endpoint's fields as views into the message.
type wireEndpoint struct {
	namespace, pod []byte
	identity       uint32
	raws           [][]byte // the message's occurrences in the flow
	labels         [][]byte
	haveWorkload   bool // the first workload's name and kind
	wlName, wlKind []byte
}

// wireFlow holds the fields fromProto reads, as views into the message and
// scalars; repeated occurrences of a message merge, as in proto.Unmarshal.
type wireFlow struct {
	haveTime     bool
	sec          int64
	nanos        int32
	verdict      int32
	dropReason   uint32
	dropDesc     int32
	direction    int32
	reply        bool
	haveIsReply  bool
	isReply      bool
	haveIP       bool
	srcIP, dstIP []byte
	ipVersion    int32
	l4           protowire.Number // the Layer4 oneof member set (0: none)
	sport, dport uint32
	haveFlags    bool
	flags        uint16
	src, dst     wireEndpoint
	node         []byte
	dstNames     [][]byte
	haveL7       bool
	latency      uint64
	l7           protowire.Number // the Layer7 oneof member set (0: none)
	dnsQuery     []byte
	rcode        uint32
	qtypes       [][]byte
	httpCode     uint32
	method, url  []byte
	policies     [4][][2][]byte // namespace, name; by group
	haveTrace    bool
	traceID      []byte
	respSec      int64
	respNanos    int32
	respNode     []byte
	haveFlow     bool
	flowMsgs     [][]byte // the occurrences of GetFlowsResponse.flow
}

func (wf *wireFlow) reset() {
	src, dst := wf.src.labels[:0], wf.dst.labels[:0]
	srcRaws, dstRaws := wf.src.raws[:0], wf.dst.raws[:0]
	names, qt, msgs := wf.dstNames[:0], wf.qtypes[:0], wf.flowMsgs[:0]
	var pol [4][][2][]byte
	for i := range wf.policies {
		pol[i] = wf.policies[i][:0]
	}
	*wf = wireFlow{}
	wf.src.labels, wf.dst.labels, wf.dstNames, wf.qtypes, wf.flowMsgs, wf.policies = src, dst, names, qt, msgs, pol
	wf.src.raws, wf.dst.raws = srcRaws, dstRaws
}

var errWireFormat = errors.New("malformed protobuf")

// field reads one field's tag and value; v is the varint (VarintType) or
// the bytes (BytesType); n is how much it consumed (< 0: malformed).
func field(b []byte) (num protowire.Number, typ protowire.Type, v uint64, bs []byte, n int) {
	num, typ, n = protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, nil, n
	}
	switch typ {
	case protowire.VarintType:
		var m int
		v, m = protowire.ConsumeVarint(b[n:])
		if m < 0 {
			return 0, 0, 0, nil, m
		}
		return num, typ, v, nil, n + m
	case protowire.BytesType:
		var m int
		bs, m = protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return 0, 0, 0, nil, m
		}
		return num, typ, 0, bs, n + m
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return 0, 0, 0, nil, m
	}
	return num, typ, 0, nil, n + m
}

// each calls fn for every field of a message; fn sees only varint and
// bytes fields (others are skipped), and a field of an unexpected wire
// type is, as for proto.Unmarshal, an unknown field.
func each(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, v, bs, n := field(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errWireFormat, protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.VarintType && typ != protowire.BytesType {
			continue
		}
		if err := fn(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

// Decode converts one GetFlowsResponse; ErrNoFlow when it carries no flow.
func (d *wireDecoder) Decode(msg []byte) (schema.Flow, error) {
	wf := &d.wf
	wf.reset()
	d.bad = false
	err := each(msg, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == respFlow && typ == protowire.BytesType:
			wf.haveFlow = true
			wf.flowMsgs = append(wf.flowMsgs, bs)
		case (num == respNodeStatus || num == respLostEvents) && typ == protowire.BytesType:
			// Another member of the oneof: the flow is gone.
			wf.haveFlow, wf.flowMsgs = false, wf.flowMsgs[:0]
			return each(bs, func(protowire.Number, protowire.Type, uint64, []byte) error { return nil })
		case num == respNodeName && typ == protowire.BytesType:
			wf.respNode = bs
		case num == respTime && typ == protowire.BytesType:
			return timestamp(bs, &wf.respSec, &wf.respNanos)
		}
		return nil
	})
	if err != nil {
		return schema.Flow{}, err
	}
	if !wf.haveFlow {
		return schema.Flow{}, ErrNoFlow
	}
	for _, m := range wf.flowMsgs {
		if err := d.flow(m); err != nil {
			return schema.Flow{}, err
		}
	}
	var src, dst resolved
	var err2 error
	if src, err2 = d.resolve(&wf.src); err2 != nil {
		return schema.Flow{}, err2
	}
	if dst, err2 = d.resolve(&wf.dst); err2 != nil {
		return schema.Flow{}, err2
	}
	return d.finish(&src, &dst)
}

func timestamp(b []byte, sec *int64, nanos *int32) error {
	return each(b, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			*sec = int64(v)
		case num == 2 && typ == protowire.VarintType:
			*nanos = int32(v)
		}
		return nil
	})
}

func (d *wireDecoder) flow(b []byte) error {
	wf := &d.wf
	return each(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		if typ == protowire.VarintType {
			switch num {
			case flowVerdict:
				wf.verdict = int32(v)
			case flowDropReason:
				wf.dropReason = uint32(v)
			case flowReply:
				wf.reply = v != 0
			case flowTrafficDirection:
				wf.direction = int32(v)
			case flowDropReasonDesc:
				wf.dropDesc = int32(v)
			}
			return nil
		}
		switch num {
		case flowTime:
			wf.haveTime = true
			return timestamp(bs, &wf.sec, &wf.nanos)
		case flowIP:
			wf.haveIP = true
			return each(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					wf.srcIP = bs
				case num == 2 && typ == protowire.BytesType:
					wf.dstIP = bs
				case num == 3 && typ == protowire.VarintType:
					wf.ipVersion = int32(v)
				}
				return nil
			})
		case flowL4:
			return d.l4(bs)
		case flowSource: // read by resolve
			wf.src.raws = append(wf.src.raws, bs)
		case flowDestination:
			wf.dst.raws = append(wf.dst.raws, bs)
		case flowNodeName:
			wf.node = bs
		case flowDestinationNames:
			wf.dstNames = append(wf.dstNames, bs)
		case flowL7:
			wf.haveL7 = true
			return d.l7(bs)
		case flowIsReply:
			wf.haveIsReply = true
			return each(bs, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
				if num == 1 && typ == protowire.VarintType {
					wf.isReply = v != 0
				}
				return nil
			})
		case flowTraceContext:
			wf.haveTrace = true
			return each(bs, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				return each(bs, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
					if num == 1 && typ == protowire.BytesType {
						wf.traceID = bs
					}
					return nil
				})
			})
		case flowEgressAllowedBy, flowIngressAllowedBy, flowEgressDeniedBy, flowIngressDeniedBy:
			g := 0 // fromProto's order: egress allowed, ingress allowed, egress denied, ingress denied
			switch num {
			case flowIngressAllowedBy:
				g = 1
			case flowEgressDeniedBy:
				g = 2
			case flowIngressDeniedBy:
				g = 3
			}
			var p [2][]byte
			if err := each(bs, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					p[1] = bs
				case num == 2 && typ == protowire.BytesType:
					p[0] = bs
				}
				return nil
			}); err != nil {
				return err
			}
			wf.policies[g] = append(wf.policies[g], p)
		}
		return nil
	})
}

// l4 reads a Layer4: a oneof whose member, when it changes, starts afresh
// (when it repeats, it merges).
func (d *wireDecoder) l4(b []byte) error {
	wf := &d.wf
	return each(b, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
		if typ != protowire.BytesType || num < 1 || num > 7 {
			return nil
		}
		if wf.l4 != num {
			wf.l4, wf.sport, wf.dport, wf.haveFlags, wf.flags = num, 0, 0, false, 0
		}
		return each(bs, func(f protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
			if num != 1 && num != 2 && num != 5 { // TCP, UDP, SCTP carry ports
				return nil
			}
			switch {
			case f == 1 && typ == protowire.VarintType:
				wf.sport = uint32(v)
			case f == 2 && typ == protowire.VarintType:
				wf.dport = uint32(v)
			case f == 3 && typ == protowire.BytesType && num == 1:
				wf.haveFlags = true
				return each(bs, func(f protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
					if typ != protowire.VarintType || f < 1 || f > 9 {
						return nil
					}
					// TCPFlags numbers FIN, SYN, RST, PSH, ACK, URG, ECE, CWR,
					// NS; tcpFlagBits orders them SYN, ACK, FIN, RST, PSH,
					// URG, ECE, CWR, NS.
					bit := [...]uint16{0, 1 << 2, 1 << 0, 1 << 3, 1 << 4, 1 << 1, 1 << 5, 1 << 6, 1 << 7, 1 << 8}[f]
					if v != 0 {
						wf.flags |= bit
					} else {
						wf.flags &^= bit
					}
					return nil
				})
			}
			return nil
		})
	})
}

func endpoint(b []byte, ep *wireEndpoint) error {
	return each(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == 2 && typ == protowire.VarintType:
			ep.identity = uint32(v)
		case num == 3 && typ == protowire.BytesType:
			ep.namespace = bs
		case num == 4 && typ == protowire.BytesType:
			ep.labels = append(ep.labels, bs)
		case num == 5 && typ == protowire.BytesType:
			ep.pod = bs
		case num == 6 && typ == protowire.BytesType:
			var name, kind []byte
			if err := each(bs, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					name = bs
				case num == 2 && typ == protowire.BytesType:
					kind = bs
				}
				return nil
			}); err != nil {
				return err
			}
			if !ep.haveWorkload {
				ep.haveWorkload, ep.wlName, ep.wlKind = true, name, kind
			}
		}
		return nil
	})
}

// l7 reads a Layer7, whose record is a oneof like Layer4's protocol.
func (d *wireDecoder) l7(b []byte) error {
	wf := &d.wf
	return each(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		if num == 2 && typ == protowire.VarintType {
			wf.latency = v
			return nil
		}
		if typ != protowire.BytesType || num < 100 || num > 102 {
			return nil
		}
		if wf.l7 != num {
			wf.l7, wf.dnsQuery, wf.rcode, wf.qtypes = num, nil, 0, wf.qtypes[:0]
			wf.httpCode, wf.method, wf.url = 0, nil, nil
		}
		return each(bs, func(f protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
			switch num {
			case 100: // DNS
				switch {
				case f == 1 && typ == protowire.BytesType:
					wf.dnsQuery = bs
				case f == 6 && typ == protowire.VarintType:
					wf.rcode = uint32(v)
				case f == 7 && typ == protowire.BytesType:
					wf.qtypes = append(wf.qtypes, bs)
				}
			case 101: // HTTP
				switch {
				case f == 1 && typ == protowire.VarintType:
					wf.httpCode = uint32(v)
				case f == 2 && typ == protowire.BytesType:
					wf.method = bs
				case f == 3 && typ == protowire.BytesType:
					wf.url = bs
				}
			}
			return nil
		})
	})
}

// resolved is an Endpoint message converted, and whether its label set is
// valid. Cached by the message's bytes (only those whose strings are
// valid): a pod's endpoint is the same bytes in every flow it sends or
// receives.
type resolved struct {
	ep    schema.Endpoint
	valid bool
}

// resolve converts an endpoint: from the cache when the flow holds it once
// and it was seen before; otherwise its occurrences are read (merged, as
// proto.Unmarshal merges them) and converted.
func (d *wireDecoder) resolve(w *wireEndpoint) (resolved, error) {
	if len(w.raws) == 1 {
		if r, ok := d.endpoints[string(w.raws[0])]; ok {
			return r, nil
		}
	}
	for _, raw := range w.raws {
		if err := endpoint(raw, w); err != nil {
			return resolved{}, err
		}
	}
	bad := d.bad
	d.bad = false
	var r resolved
	r.valid = d.endpoint(w, &r.ep)
	if len(w.raws) == 1 && !d.bad {
		if len(d.endpoints) >= maxEndpoints {
			clear(d.endpoints)
		}
		d.endpoints[string(w.raws[0])] = r
	}
	d.bad = d.bad || bad
	return r, nil
}

// finish is fromProto over the fields read, in its order of checks.
func (d *wireDecoder) finish(src, dst *resolved) (schema.Flow, error) {
	wf := &d.wf
	var out schema.Flow
	out.Source = schema.SourceHubble
	// As fromProto: the response's time (1970 when it has none) unless the
	// flow has one.
	out.Time = time.Unix(wf.respSec, int64(wf.respNanos)).UTC()
	if wf.haveTime {
		out.Time = time.Unix(wf.sec, int64(wf.nanos)).UTC()
	}
	if out.Time.IsZero() {
		return out, errors.New("flow has no time")
	}
	if err := schema.CheckTime("time", out.Time); err != nil {
		return out, err
	}
	out.Node = d.intern(wf.node)
	if out.Node == "" {
		out.Node = d.intern(wf.respNode)
	}
	var err error
	if out.Verdict, err = verdictName(wf.verdict); err != nil {
		return out, err
	}
	out.DropReason = dropReasonName(wf.dropDesc, wf.dropReason)
	out.Direction = directionName(wf.direction)
	out.IsReply = wf.reply
	if wf.haveIsReply {
		out.IsReply = wf.isReply
	}
	if wf.haveIP {
		if out.SrcIP, err = d.addr(wf.srcIP); err != nil {
			return out, fmt.Errorf("IP.source: %w", err)
		}
		if out.DstIP, err = d.addr(wf.dstIP); err != nil {
			return out, fmt.Errorf("IP.destination: %w", err)
		}
		out.IPVersion = ipVersion(wf.ipVersion, out.SrcIP)
	}
	switch wf.l4 {
	case 1, 2, 5:
		if err := schema.CheckPort("l4.source_port", uint64(wf.sport)); err != nil {
			return out, err
		}
		if err := schema.CheckPort("l4.destination_port", uint64(wf.dport)); err != nil {
			return out, err
		}
		out.SrcPort, out.DstPort = uint16(wf.sport), uint16(wf.dport)
		out.Protocol = "TCP"
		if wf.l4 == 2 {
			out.Protocol = "UDP"
		} else if wf.l4 == 5 {
			out.Protocol = "SCTP"
		}
		if wf.l4 == 1 && wf.haveFlags {
			out.TCPFlags = schema.TCPFlagsString(wf.flags)
		}
	case 3:
		out.Protocol = "ICMPv4"
	case 4:
		out.Protocol = "ICMPv6"
	case 6:
		out.Protocol = "VRRP"
	case 7:
		out.Protocol = "IGMP"
	}
	out.Src, out.Dst = src.ep, dst.ep
	srcValid, dstValid := src.valid, dst.valid
	if len(wf.dstNames) > 0 {
		out.DstNames = make([]string, len(wf.dstNames))
		for i, n := range wf.dstNames {
			out.DstNames[i] = d.intern(n)
		}
	}
	if wf.haveL7 {
		if out.DurationMs, err = latencyMs(wf.latency); err != nil {
			return out, err
		}
		switch wf.l7 {
		case 100:
			out.L7Type = "dns"
			out.DNSQuery = d.intern(wf.dnsQuery)
			if err := checkMax("l7.dns.rcode", uint64(wf.rcode), 1<<16-1); err != nil {
				return out, err
			}
			out.DNSRCode = uint16(wf.rcode)
			out.DNSQType = d.qtypes(wf.qtypes)
		case 101:
			if err := checkMax("l7.http.code", uint64(wf.httpCode), maxHTTPStatus); err != nil {
				return out, err
			}
			out.L7Type = "http"
			out.HTTPMethod = d.intern(wf.method)
			out.HTTPPath = d.intern(urlPathBytes(wf.url))
			out.HTTPStatus = uint16(wf.httpCode)
		case 102:
			out.L7Type = "kafka"
		}
	}
	for _, group := range wf.policies {
		for _, p := range group {
			// policyName, joined in a reused buffer and interned.
			d.qbuf = d.qbuf[:0]
			if len(p[0]) > 0 {
				d.qbuf = append(append(d.qbuf, p[0]...), '/')
			}
			d.qbuf = append(d.qbuf, p[1]...)
			out.PolicyNames = append(out.PolicyNames, d.intern(d.qbuf))
		}
	}
	if wf.haveTrace {
		out.TraceID = d.intern(wf.traceID)
	}
	// Every string of the record was checked as it was interned (or is
	// one of the interned ones cut at an ASCII separator, a label value,
	// or a fixed name), label sets when they were built, times, verdicts
	// and directions above: Validate would find nothing. When something
	// was not a valid name, it finds and names it (FuzzWireDecode checks
	// that every accepted record validates).
	if d.bad || !srcValid || !dstValid {
		if err := out.Validate(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// endpoint is endpointFromProto; it reports whether the label set is valid.
func (d *wireDecoder) endpoint(w *wireEndpoint, ep *schema.Endpoint) bool {
	ep.Namespace = d.intern(w.namespace)
	ep.Pod = d.intern(w.pod)
	ep.Identity = w.identity
	ls := d.labelSet(w.labels)
	ep.Labels = ls.m
	if w.haveWorkload {
		ep.Workload, ep.WorkloadKind = d.intern(w.wlName), d.intern(w.wlKind)
	}
	if ep.Workload == "" {
		if ep.Pod != "" {
			ep.Workload, ep.WorkloadKind = d.workload(ep.Pod, ep.Labels)
		} else if ls.reserved != "" {
			ep.Workload, ep.WorkloadKind = ls.reserved, schema.KindReserved
		}
	}
	return ls.valid
}

// labelSet is labelMap and reservedName of a raw label list, cached by its
// bytes.
func (d *wireDecoder) labelSet(raw [][]byte) wireLabels {
	if len(raw) == 0 {
		return wireLabels{valid: true}
	}
	d.key = d.key[:0]
	for _, l := range raw { // length-prefixed: no two lists share a key
		d.key = protowire.AppendBytes(d.key, l)
	}
	if ls, ok := d.labels[string(d.key)]; ok {
		return ls
	}
	labels := make([]string, len(raw))
	for i, l := range raw {
		labels[i] = string(l)
	}
	ls := wireLabels{m: make(map[string]string, len(labels)), reserved: reservedName(labels), valid: true}
	bad := d.bad
	for _, l := range labels {
		k, v := splitLabel(l)
		ls.m[d.internString(k)] = d.internString(v)
	}
	d.bad = bad // a bad label is the set's business: valid tells
	for k, v := range ls.m {
		if schema.CheckName("labels", k) != nil || schema.CheckName("labels", v) != nil {
			ls.valid = false
		}
	}
	if len(d.labels) >= maxLabelSets {
		clear(d.labels)
	}
	d.labels[string(d.key)] = ls
	return ls
}

// intern returns a shared copy of b's string (the lookup does not
// allocate). Only valid names are kept; another sets bad.
func (d *wireDecoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.strings[string(b)]; ok {
		return s
	}
	return d.internString(string(b))
}

func (d *wireDecoder) internString(s string) string {
	v, err := d.strings.intern(s)
	if err != nil {
		d.bad = true
	}
	return v
}

// workload is schema.WorkloadFromPod, cached per pod and label set.
func (d *wireDecoder) workload(pod string, labels map[string]string) (string, string) {
	if w, ok := d.workloads[pod]; ok && reflect.ValueOf(w.labels).Pointer() == reflect.ValueOf(labels).Pointer() {
		return w.name, w.kind
	}
	name, kind := schema.WorkloadFromPod(pod, labels)
	if len(d.workloads) >= maxInterned {
		clear(d.workloads)
	}
	d.workloads[pod] = podWorkload{labels: labels, name: name, kind: kind}
	return name, kind
}

// addr is parseIP, cached by the address's text.
func (d *wireDecoder) addr(b []byte) (netip.Addr, error) {
	if len(b) == 0 {
		return netip.Addr{}, nil
	}
	if a, ok := d.addrs[string(b)]; ok {
		return a, nil
	}
	a, err := parseIP(string(b))
	if err != nil {
		return a, err
	}
	if len(d.addrs) >= maxAddrs {
		clear(d.addrs)
	}
	d.addrs[string(b)] = a
	return a, nil
}

// qtypes is joinQTypes.
func (d *wireDecoder) qtypes(q [][]byte) string {
	if len(q) == 1 {
		return d.intern(q[0])
	}
	d.qbuf = d.qbuf[:0]
	for i, t := range q {
		if i > 0 {
			d.qbuf = append(d.qbuf, ',')
		}
		d.qbuf = append(d.qbuf, t...)
	}
	return d.intern(d.qbuf)
}

var rootPath = []byte("/")

// urlPathBytes is urlPath over bytes.
func urlPathBytes(u []byte) []byte {
	if i := bytes.Index(u, []byte("://")); i >= 0 {
		u = u[i+3:]
		j := bytes.IndexByte(u, '/')
		if j < 0 {
			return rootPath
		}
		u = u[j:]
	}
	if i := bytes.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return u
}
