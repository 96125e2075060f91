package hubble

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flowwarden/flowwarden/ingest/jsonscan"
	"github.com/flowwarden/flowwarden/schema"
)

// Decoder turns Hubble JSON lines (the exporter's files and `hubble observe
// -o json`, both GetFlowsResponse objects) into flow records. It is the fast
// path: a single pass over the bytes that reads only the fields flowwarden
// stores, validates the syntax of everything else, and caches repeated
// strings and label sets. ParseResponseJSON with FromProto is its oracle; a
// test proves they agree on every published sample. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	s       jsonscan.Scanner
	strings nameCache
	labels  map[string]labelSet
	// endpoints are endpoint objects read before, by their raw bytes: the
	// same pods send the same source and destination objects, which are
	// most of a line's bytes.
	endpoints map[string]endpointFields
	// bad is the first string of the line being decoded that is not a
	// valid name (see schema.CheckName); only valid strings are cached, so
	// a cached one needs no check.
	bad error
	// qbuf joins a DNS query's types (qtypes).
	qbuf []byte
	// lastTS is the text of the last timestamp parsed, lastT its value.
	lastTS []byte
	lastT  time.Time
}

type labelSet struct {
	m        map[string]string
	reserved string
}

// Bounds on the caches, so a stream of unique values cannot grow them forever.
const (
	maxInterned  = 1 << 16
	maxLabelSets = 1 << 14
	// MaxLineBytes is the longest line accepted; real flows are a few KiB.
	MaxLineBytes = 1 << 20
)

// NewDecoder returns a Decoder with empty caches.
func NewDecoder() *Decoder {
	return &Decoder{strings: make(map[string]string), labels: make(map[string]labelSet), endpoints: make(map[string]endpointFields)}
}

// ParseResponseJSON is the reference parser: protojson into a
// GetFlowsResponse, then FromProto. It is slower than Decoder and used as its
// oracle and as a fallback for debugging.
func ParseResponseJSON(line []byte) (schema.Flow, error) {
	var resp observer.GetFlowsResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &resp); err != nil {
		return schema.Flow{}, err
	}
	f := resp.GetFlow()
	if f == nil {
		return schema.Flow{}, ErrNoFlow
	}
	if f.GetVerdict() == flowpb.Verdict_VERDICT_UNKNOWN {
		// protojson's DiscardUnknown reads an unknown enum name as 0.
		if err := checkVerdictName(line); err != nil {
			return schema.Flow{}, err
		}
	}
	var t time.Time
	if resp.GetTime() != nil {
		t = resp.GetTime().AsTime()
	}
	return FromProto(f, t, resp.GetNodeName())
}

// checkVerdictName refuses a line whose flow.verdict is a name the Verdict
// enum does not have, reading it with encoding/json (the oracle's own
// reading, independent of the fast decoder).
func checkVerdictName(line []byte) error {
	var resp, flow map[string]json.RawMessage
	if err := json.Unmarshal(line, &resp); err != nil {
		return err
	}
	if err := json.Unmarshal(resp["flow"], &flow); err != nil {
		return err
	}
	var name string
	if raw, ok := flow["verdict"]; !ok || json.Unmarshal(raw, &name) != nil {
		return nil // absent, null or a number
	}
	if _, ok := flowpb.Verdict_value[name]; !ok {
		return &schema.FieldError{Field: "verdict", Reason: schema.ReasonVerdict, Value: name}
	}
	return nil
}

// flowFields collects the raw values of one flow before conversion.
type flowFields struct {
	haveTime     bool
	time         time.Time
	node         string
	verdict      int32
	dropReason   uint32
	dropDesc     int32
	direction    int32
	reply        bool
	haveIsReply  bool
	isReply      bool
	ipVersion    int32
	srcIP, dstIP netip.Addr
	src, dst     endpointFields
	out          *schema.Flow
}

type endpointFields struct {
	ep       schema.Endpoint
	reserved string
	// read is set once the object was read: a key repeated in a line (which
	// protojson refuses) is read over the first one, as without the cache.
	read bool
	// done: ep is finished (a cached endpoint is stored finished); raw
	// is then ep as read, before finish, for a repeated key to be read
	// over.
	done bool
	raw  *schema.Endpoint
}

// Decode parses one line. It returns ErrNoFlow (wrapped) for responses that
// carry no flow, and an error naming the problem for malformed input.
func (d *Decoder) Decode(line []byte) (schema.Flow, error) {
	var out schema.Flow
	if len(line) > MaxLineBytes {
		return out, fmt.Errorf("line of %d bytes exceeds the %d-byte limit", len(line), MaxLineBytes)
	}
	d.s.Reset(line)
	d.bad = nil
	s := &d.s
	var (
		haveFlow  bool
		outerTime time.Time
		outerNode string
		ff        flowFields
	)
	ff.out = &out
	err := s.Object(func(key []byte) error {
		switch string(key) {
		case "flow":
			if s.Null() {
				return nil
			}
			haveFlow = true
			return d.flow(&ff)
		case "node_name", "nodeName":
			v, err := d.stringOrNull()
			outerNode = v
			return err
		case "time":
			if s.Null() {
				return nil
			}
			t, err := d.timestamp()
			outerTime = t
			return err
		default:
			return s.Skip()
		}
	})
	if err != nil {
		return schema.Flow{}, err
	}
	if s.Peek() != 0 {
		return schema.Flow{}, s.Errf("unexpected data after the JSON object")
	}
	if !haveFlow {
		return schema.Flow{}, ErrNoFlow
	}
	return d.finish(&ff, outerTime, outerNode)
}

func (d *Decoder) finish(ff *flowFields, outerTime time.Time, outerNode string) (schema.Flow, error) {
	out := ff.out
	out.Source = schema.SourceHubble
	out.Time = outerTime
	if ff.haveTime {
		out.Time = ff.time
	}
	if out.Time.IsZero() {
		return schema.Flow{}, errors.New("flow has no time")
	}
	if err := schema.CheckTime("time", out.Time); err != nil {
		return schema.Flow{}, err
	}
	if d.bad != nil {
		return schema.Flow{}, d.bad
	}
	out.Node = ff.node
	if out.Node == "" {
		out.Node = outerNode
	}
	v, err := verdictName(ff.verdict)
	if err != nil {
		return schema.Flow{}, err
	}
	out.Verdict = v
	out.DropReason = dropReasonName(ff.dropDesc, ff.dropReason)
	out.Direction = directionName(ff.direction)
	out.IsReply = ff.reply
	if ff.haveIsReply {
		out.IsReply = ff.isReply
	}
	out.SrcIP, out.DstIP = ff.srcIP, ff.dstIP
	out.IPVersion = ipVersion(ff.ipVersion, ff.srcIP)
	out.Src = ff.src.finish()
	out.Dst = ff.dst.finish()
	return *out, nil
}

func (e *endpointFields) finish() schema.Endpoint {
	if e.done {
		return e.ep
	}
	ep := e.ep
	if ep.Workload == "" {
		if ep.Pod != "" {
			ep.Workload, ep.WorkloadKind = schema.WorkloadFromPod(ep.Pod, ep.Labels)
		} else if e.reserved != "" {
			ep.Workload, ep.WorkloadKind = e.reserved, schema.KindReserved
		}
	}
	return ep
}

func (d *Decoder) flow(ff *flowFields) error {
	s := &d.s
	out := ff.out
	return s.Object(func(key []byte) error {
		switch string(key) {
		case "time":
			if s.Null() {
				return nil
			}
			t, err := d.timestamp()
			ff.time, ff.haveTime = t, err == nil
			return err
		case "verdict":
			v, err := d.enum(flowpb.Verdict_value)
			if name, ok := err.(unknownName); ok {
				return &schema.FieldError{Field: "verdict", Reason: schema.ReasonVerdict, Value: string(name)}
			}
			ff.verdict = v
			return err
		case "drop_reason", "dropReason":
			if s.Null() {
				return nil
			}
			v, err := s.Uint(1<<32 - 1)
			ff.dropReason = uint32(v)
			return err
		case "drop_reason_desc", "dropReasonDesc":
			v, err := d.enumLenient(flowpb.DropReason_value)
			ff.dropDesc = v
			return err
		case "traffic_direction", "trafficDirection":
			v, err := d.enumLenient(flowpb.TrafficDirection_value)
			ff.direction = v
			return err
		case "reply":
			if s.Null() {
				return nil
			}
			v, err := s.Bool()
			ff.reply = v
			return err
		case "is_reply", "isReply":
			if s.Null() {
				return nil
			}
			v, err := s.Bool()
			ff.isReply, ff.haveIsReply = v, true
			return err
		case "node_name", "nodeName":
			v, err := d.stringOrNull()
			ff.node = v
			return err
		case "IP":
			return d.ip(ff)
		case "l4":
			return d.l4(out)
		case "source":
			return d.endpoint(&ff.src)
		case "destination":
			return d.endpoint(&ff.dst)
		case "destination_names", "destinationNames":
			names, err := d.stringArray(out.DstNames[:0])
			out.DstNames = names
			return err
		case "l7":
			return d.l7(out)
		case "egress_allowed_by", "egressAllowedBy", "ingress_allowed_by", "ingressAllowedBy",
			"egress_denied_by", "egressDeniedBy", "ingress_denied_by", "ingressDeniedBy":
			return d.policies(out)
		case "trace_context", "traceContext":
			return d.traceContext(out)
		default:
			return s.Skip()
		}
	})
}

func (d *Decoder) ip(ff *flowFields) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	return s.Object(func(key []byte) error {
		switch string(key) {
		case "source":
			a, err := d.addr("IP.source")
			ff.srcIP = a
			return err
		case "destination":
			a, err := d.addr("IP.destination")
			ff.dstIP = a
			return err
		case "ipVersion", "ip_version":
			v, err := d.enumLenient(flowpb.IPVersion_value)
			ff.ipVersion = v
			return err
		default:
			return s.Skip()
		}
	})
}

func (d *Decoder) addr(field string) (netip.Addr, error) {
	if d.s.Null() {
		return netip.Addr{}, nil
	}
	b, err := d.s.Str()
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := parseIP(string(b))
	if err != nil {
		return a, fmt.Errorf("%s: %w", field, err)
	}
	return a, nil
}

func (d *Decoder) l4(out *schema.Flow) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	return s.Object(func(key []byte) error {
		if s.Null() {
			return nil
		}
		switch string(key) {
		case "TCP":
			out.Protocol = "TCP"
			return d.ports(out, true)
		case "UDP":
			out.Protocol = "UDP"
			return d.ports(out, false)
		case "SCTP":
			out.Protocol = "SCTP"
			return d.ports(out, false)
		case "ICMPv4":
			out.Protocol = "ICMPv4"
		case "ICMPv6":
			out.Protocol = "ICMPv6"
		case "VRRP":
			out.Protocol = "VRRP"
		case "IGMP":
			out.Protocol = "IGMP"
		}
		return s.Skip()
	})
}

func (d *Decoder) ports(out *schema.Flow, tcp bool) error {
	s := &d.s
	return s.Object(func(key []byte) error {
		if s.Null() {
			return nil
		}
		switch string(key) {
		case "source_port", "sourcePort":
			v, err := s.Uint(1<<32 - 1)
			if err == nil {
				err = schema.CheckPort("l4.source_port", v)
			}
			out.SrcPort = uint16(v)
			return err
		case "destination_port", "destinationPort":
			v, err := s.Uint(1<<32 - 1)
			if err == nil {
				err = schema.CheckPort("l4.destination_port", v)
			}
			out.DstPort = uint16(v)
			return err
		case "flags":
			if !tcp {
				return s.Skip()
			}
			var bits uint16
			err := s.Object(func(key []byte) error {
				bit := -1
				for i, n := range schema.TCPFlagNames {
					if string(key) == n {
						bit = i
						break
					}
				}
				if s.Null() {
					return nil
				}
				if bit < 0 {
					return s.Skip()
				}
				v, err := s.Bool()
				if v {
					bits |= 1 << bit
				}
				return err
			})
			out.TCPFlags = schema.TCPFlagsString(bits)
			return err
		default:
			return s.Skip()
		}
	})
}

// endpoint reads a source or destination object. An object whose bytes were
// read before, valid, is taken from the cache without reading it again
// (its bytes being equal, so are its syntax and values).
func (d *Decoder) endpoint(e *endpointFields) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	start := s.Pos()
	end, ok := s.Extent()
	ok = ok && !e.read
	if ok {
		if cached, hit := d.endpoints[string(s.Bytes(start, end))]; hit {
			*e = cached
			s.Seek(end)
			return nil
		}
	}
	if e.done {
		// A repeated key over an object taken from the cache: read over
		// the object as read, not as finished (its workload was derived
		// from its pod name).
		e.ep, e.done, e.raw = *e.raw, false, nil
	}
	clean, err := d.checked(func() error { return d.endpointFields(e) })
	e.read = true
	// An object with a bad name is not cached: the next line with it is
	// refused too.
	if clean && err == nil && ok && s.Pos() == end {
		if len(d.endpoints) >= maxEndpoints {
			clear(d.endpoints)
		}
		raw := e.ep
		d.endpoints[string(s.Bytes(start, end))] = endpointFields{ep: e.finish(), reserved: e.reserved, read: true, done: true, raw: &raw}
	}
	return err
}

// checked runs read with the line's bad name (d.bad) set aside and tells
// whether read met none, so that what it read may be cached; the line
// keeps the first bad name it met, before read or in it.
func (d *Decoder) checked(read func() error) (clean bool, err error) {
	bad := d.bad
	d.bad = nil
	err = read()
	clean = d.bad == nil
	if bad != nil {
		d.bad = bad
	}
	return clean, err
}

func (d *Decoder) endpointFields(e *endpointFields) error {
	s := &d.s
	return s.Object(func(key []byte) error {
		switch string(key) {
		case "namespace":
			v, err := d.stringOrNull()
			e.ep.Namespace = v
			return err
		case "pod_name", "podName":
			v, err := d.stringOrNull()
			e.ep.Pod = v
			return err
		case "identity":
			if s.Null() {
				return nil
			}
			v, err := s.Uint(1<<32 - 1)
			e.ep.Identity = uint32(v)
			return err
		case "labels":
			if s.Null() {
				return nil
			}
			return d.labelArray(e)
		case "workloads":
			if s.Null() {
				return nil
			}
			first := true
			return s.Array(func() error {
				if !first {
					return s.Skip()
				}
				first = false
				if s.Null() {
					return nil
				}
				return s.Object(func(key []byte) error {
					switch string(key) {
					case "name":
						v, err := d.stringOrNull()
						e.ep.Workload = v
						return err
					case "kind":
						v, err := d.stringOrNull()
						e.ep.WorkloadKind = v
						return err
					}
					return s.Skip()
				})
			})
		default:
			return s.Skip()
		}
	})
}

// labelArray reads an endpoint's label list. The same pods repeat the same
// lists, so parsed sets are cached by their raw bytes and shared (the maps
// are never modified after creation).
func (d *Decoder) labelArray(e *endpointFields) error {
	s := &d.s
	s.SkipSpace()
	start := s.Pos()
	if err := s.Skip(); err != nil {
		return err
	}
	key := s.Bytes(start, s.Pos())
	if ls, ok := d.labels[string(key)]; ok {
		e.ep.Labels, e.reserved = ls.m, ls.reserved
		return nil
	}
	var raw []string
	var sub jsonscan.Scanner
	sub.Reset(key)
	if err := sub.Array(func() error {
		b, err := sub.Str()
		raw = append(raw, string(b))
		return err
	}); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	ls := labelSet{m: make(map[string]string, len(raw)), reserved: reservedName(raw)}
	clean, _ := d.checked(func() error {
		for _, l := range raw {
			k, v := splitLabel(l)
			ls.m[d.intern(k)] = d.intern(v)
		}
		return nil
	})
	if len(ls.m) == 0 {
		ls.m = nil
	}
	if !clean {
		// Not cached: the next line with these labels is refused too.
		e.ep.Labels, e.reserved = ls.m, ls.reserved
		return nil
	}
	if len(d.labels) >= maxLabelSets {
		clear(d.labels)
	}
	d.labels[string(key)] = ls
	e.ep.Labels, e.reserved = ls.m, ls.reserved
	return nil
}

func (d *Decoder) l7(out *schema.Flow) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	return s.Object(func(key []byte) error {
		if s.Null() {
			return nil
		}
		switch string(key) {
		case "latency_ns", "latencyNs":
			v, err := s.Uint(1<<64 - 1)
			if err == nil {
				out.DurationMs, err = latencyMs(v)
			}
			return err
		case "dns":
			out.L7Type = "dns"
			return s.Object(func(key []byte) error {
				if s.Null() {
					return nil
				}
				switch string(key) {
				case "query":
					v, err := s.Str()
					out.DNSQuery = d.intern(string(v))
					return err
				case "rcode":
					v, err := s.Uint(1<<32 - 1)
					if err == nil {
						err = checkMax("l7.dns.rcode", v, 1<<16-1)
					}
					out.DNSRCode = uint16(v)
					return err
				case "qtypes":
					return d.qtypes(out)
				}
				return s.Skip()
			})
		case "http":
			out.L7Type = "http"
			return s.Object(func(key []byte) error {
				if s.Null() {
					return nil
				}
				switch string(key) {
				case "method":
					v, err := s.Str()
					out.HTTPMethod = d.intern(string(v))
					return err
				case "url":
					v, err := s.Str()
					out.HTTPPath = urlPath(string(v))
					if err == nil && d.bad == nil {
						d.bad = schema.CheckName("l7.http.url", out.HTTPPath)
					}
					return err
				case "code":
					v, err := s.Uint(1<<32 - 1)
					if err == nil {
						err = checkMax("l7.http.code", v, maxHTTPStatus)
					}
					out.HTTPStatus = uint16(v)
					return err
				}
				return s.Skip()
			})
		case "kafka":
			out.L7Type = "kafka"
			return s.Skip()
		default:
			return s.Skip()
		}
	})
}

func (d *Decoder) policies(out *schema.Flow) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	return s.Array(func() error {
		var ns, name string
		if s.Null() {
			out.PolicyNames = append(out.PolicyNames, "")
			return nil
		}
		err := s.Object(func(key []byte) error {
			switch string(key) {
			case "name":
				v, err := d.stringOrNull()
				name = v
				return err
			case "namespace":
				v, err := d.stringOrNull()
				ns = v
				return err
			}
			return s.Skip()
		})
		out.PolicyNames = append(out.PolicyNames, policyName(ns, name))
		return err
	})
}

func (d *Decoder) traceContext(out *schema.Flow) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	return s.Object(func(key []byte) error {
		if string(key) != "parent" || s.Null() {
			return s.Skip()
		}
		return s.Object(func(key []byte) error {
			if string(key) != "trace_id" && string(key) != "traceId" {
				return s.Skip()
			}
			v, err := d.stringOrNull()
			out.TraceID = v
			return err
		})
	})
}

func (d *Decoder) stringOrNull() (string, error) {
	if d.s.Null() {
		return "", nil
	}
	b, err := d.s.Str()
	if err != nil {
		return "", err
	}
	return d.intern(string(b)), nil
}

// qtypes reads l7.dns.qtypes into out.DNSQType as joinQTypes does: the
// types comma-joined in a reused buffer, then interned (a handful of
// distinct values: no allocation once seen).
func (d *Decoder) qtypes(out *schema.Flow) error {
	s := &d.s
	if s.Null() {
		return nil
	}
	d.qbuf = d.qbuf[:0]
	n := 0
	err := s.Array(func() error {
		if n > 0 {
			d.qbuf = append(d.qbuf, ',')
		}
		n++
		if s.Null() {
			return nil
		}
		v, err := s.Str()
		d.qbuf = append(d.qbuf, v...)
		return err
	})
	if len(d.qbuf) > 0 {
		out.DNSQType = d.intern(string(d.qbuf))
	}
	return err
}

func (d *Decoder) stringArray(dst []string) ([]string, error) {
	s := &d.s
	if s.Null() {
		return dst, nil
	}
	err := s.Array(func() error {
		v, err := d.stringOrNull()
		dst = append(dst, v)
		return err
	})
	return dst, err
}

// intern returns a shared copy of s; the conversion in the lookup does not
// allocate. A string that is not a valid name is not cached: it sets d.bad,
// which refuses the line.
func (d *Decoder) intern(s string) string {
	v, err := d.strings.intern(s)
	if err != nil && d.bad == nil {
		d.bad = err
	}
	return v
}

// nameCache holds shared copies of valid names (schema.CheckName), at most
// maxInterned of them, for both Hubble decoders.
type nameCache map[string]string

// intern returns the shared copy of s, keeping it if it is new; a string
// that is not a valid name is returned as it is, with the reason, and not
// kept.
func (c nameCache) intern(s string) (string, error) {
	if v, ok := c[s]; ok {
		return v, nil // the hit stays inlined in the decoders
	}
	return c.add(s)
}

func (c nameCache) add(s string) (string, error) {
	if err := schema.CheckName("string", s); err != nil {
		return s, err
	}
	if len(c) >= maxInterned {
		clear(c)
	}
	c[s] = s
	return s, nil
}

// unknownName is an enum name that is not among the enum's values.
type unknownName string

func (n unknownName) Error() string { return "unknown enum name " + string(n) }

// enumLenient reads a protobuf enum as protojson does: a name, or a number.
// Unknown names read as 0, as protojson's DiscardUnknown does (a newer
// agent may send a drop reason this build does not know).
func (d *Decoder) enumLenient(values map[string]int32) (int32, error) {
	v, err := d.enum(values)
	if _, ok := err.(unknownName); ok {
		return 0, nil
	}
	return v, err
}

// enum reads a protobuf enum: a name, or a number. An unknown name is an
// unknownName error.
func (d *Decoder) enum(values map[string]int32) (int32, error) {
	s := &d.s
	switch c := s.Peek(); {
	case c == 'n':
		if s.Null() {
			return 0, nil
		}
	case c == '"':
		b, err := s.Str()
		if err != nil {
			return 0, err
		}
		v, ok := values[string(b)]
		if !ok {
			return 0, unknownName(truncate(string(b), 64))
		}
		return v, nil
	case c == '-' || (c >= '0' && c <= '9'):
		tok, err := s.Number()
		if err != nil {
			return 0, err
		}
		var v int64
		neg := tok[0] == '-'
		if neg {
			tok = tok[1:]
		}
		for _, c := range tok {
			if c < '0' || c > '9' || v > 1<<31 {
				return 0, s.Errf("enum value %q is not an int32", tok)
			}
			v = v*10 + int64(c-'0')
		}
		if neg {
			v = -v
		}
		if v > 1<<31-1 || v < -(1<<31) {
			return 0, s.Errf("enum value out of range")
		}
		return int32(v), nil
	}
	if c := s.Peek(); c == 0 {
		return 0, jsonscan.ErrEOF
	}
	return 0, s.Errf("expected an enum name or number")
}

// timestamp reads an RFC 3339 timestamp string. The common Hubble shape
// (UTC, "Z", up to nanoseconds) is parsed by hand; anything else goes through
// time.Parse.
func (d *Decoder) timestamp() (time.Time, error) {
	b, err := d.s.Str()
	if err != nil {
		return time.Time{}, err
	}
	// Hubble writes the flow's time twice per line (the response's and
	// the flow's), the same text: the second is not parsed again.
	if len(d.lastTS) > 0 && string(b) == string(d.lastTS) {
		return d.lastT, nil
	}
	if t, ok := parseUTCTimestamp(b); ok {
		d.lastTS, d.lastT = append(d.lastTS[:0], b...), t
		return t, nil
	}
	t, perr := time.Parse(time.RFC3339Nano, string(b))
	if perr != nil {
		return time.Time{}, fmt.Errorf("invalid timestamp %q", truncate(string(b), 64))
	}
	return t.UTC(), nil
}

func parseUTCTimestamp(b []byte) (time.Time, bool) {
	// 2006-01-02T15:04:05[.fffffffff]Z
	if len(b) < 20 || b[len(b)-1] != 'Z' || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	num := func(p []byte) (int, bool) {
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hour, ok4 := num(b[11:13])
	minute, ok5 := num(b[14:16])
	sec, ok6 := num(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	frac := b[19 : len(b)-1]
	if len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		n, ok := num(frac[1:])
		if !ok {
			return time.Time{}, false
		}
		for i := len(frac) - 1; i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
