// Package analyzetest reads and writes flow fixtures: gzipped JSON lines
// of schema.Flow with short field names, so detection scenarios load
// without a flow parser (no ingest import). A fixture keeps every field of
// schema.Flow: ReadFlows returns what WriteFlows was given, times in UTC,
// empty label maps and name lists as nil, an unset IPVersion as the
// source address's.
package analyzetest

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flowwarden/flowwarden/schema"
)

type endpoint struct {
	Namespace string            `json:"ns,omitempty"`
	Pod       string            `json:"pod,omitempty"`
	Workload  string            `json:"wl,omitempty"`
	Kind      string            `json:"kind,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Identity  uint32            `json:"id,omitempty"`
}

type record struct {
	Time       time.Time  `json:"t"`
	Node       string     `json:"node,omitempty"`
	Source     string     `json:"src,omitempty"`
	Verdict    string     `json:"v,omitempty"`
	DropReason string     `json:"drop,omitempty"`
	Direction  string     `json:"dir,omitempty"`
	IsReply    bool       `json:"reply,omitempty"`
	Protocol   string     `json:"proto,omitempty"`
	SrcIP      netip.Addr `json:"sip"`
	DstIP      netip.Addr `json:"dip"`
	SrcPort    uint16     `json:"sport,omitempty"`
	DstPort    uint16     `json:"dport,omitempty"`
	TCPFlags   string     `json:"flags,omitempty"`
	Src        endpoint   `json:"s"`
	Dst        endpoint   `json:"d"`
	DstNames   []string   `json:"names,omitempty"`
	L7Type     string     `json:"l7,omitempty"`
	DNSQuery   string     `json:"q,omitempty"`
	DNSRCode   uint16     `json:"rcode,omitempty"`
	DNSQType   string     `json:"qtype,omitempty"`
	HTTPMethod string     `json:"method,omitempty"`
	HTTPPath   string     `json:"path,omitempty"`
	HTTPStatus uint16     `json:"status,omitempty"`
	Bytes      uint64     `json:"bytes,omitempty"`
	MTLS       bool       `json:"mtls,omitempty"`
	// IPVersion is written only when it is not what the source address
	// says (4 for IPv4 and IPv4-mapped addresses, 6 otherwise); an unset
	// one (0) reads back as what the address says.
	IPVersion    *uint8   `json:"ipv,omitempty"`
	Packets      uint64   `json:"pkts,omitempty"`
	DurationMs   uint32   `json:"ms,omitempty"`
	SrcPrincipal string   `json:"sprin,omitempty"`
	DstPrincipal string   `json:"dprin,omitempty"`
	PolicyNames  []string `json:"policies,omitempty"`
	TraceID      string   `json:"trace,omitempty"`
}

// ipVersion is the IP version a fixture line without "ipv" stands for.
func ipVersion(src netip.Addr) uint8 {
	if src.Is6() && !src.Is4In6() {
		return 6
	}
	return 4
}

func toEndpoint(e schema.Endpoint) endpoint {
	return endpoint{e.Namespace, e.Pod, e.Workload, e.WorkloadKind, e.Labels, e.Identity}
}

func (in *interner) endpoint(e endpoint) schema.Endpoint {
	return schema.Endpoint{Namespace: in.str(e.Namespace), Pod: in.str(e.Pod), Workload: in.str(e.Workload), WorkloadKind: in.str(e.Kind),
		Labels: in.labels(e.Labels), Identity: e.Identity}
}

// interner gives ReadFlows' flows the memory shape of ingest's decoders:
// equal strings share one copy and equal label sets one map, so the
// detectors (and their benchmarks) see flows as a live source hands them.
type interner struct {
	strs   map[string]string
	labelm map[string]map[string]string
}

func (in *interner) str(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.strs[s] = s
	return s
}

func (in *interner) strings(ss []string) []string {
	for i, s := range ss {
		ss[i] = in.str(s)
	}
	return ss
}

func (in *interner) labels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	if v, ok := in.labelm[b.String()]; ok {
		return v
	}
	shared := make(map[string]string, len(m))
	for k, v := range m {
		shared[in.str(k)] = in.str(v)
	}
	in.labelm[b.String()] = shared
	return shared
}

// WriteFlows writes flows to path as a gzipped fixture.
func WriteFlows(path string, flows []schema.Flow) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	enc := json.NewEncoder(zw)
	for i := range flows {
		x := &flows[i]
		r := record{Time: x.Time.UTC(), Node: x.Node, Source: string(x.Source), Verdict: string(x.Verdict), DropReason: x.DropReason,
			Direction: string(x.Direction), IsReply: x.IsReply, Protocol: x.Protocol, SrcIP: x.SrcIP, DstIP: x.DstIP,
			SrcPort: x.SrcPort, DstPort: x.DstPort, TCPFlags: x.TCPFlags, Src: toEndpoint(x.Src), Dst: toEndpoint(x.Dst),
			DstNames: x.DstNames, L7Type: x.L7Type, DNSQuery: x.DNSQuery, DNSRCode: x.DNSRCode, DNSQType: x.DNSQType, HTTPMethod: x.HTTPMethod,
			HTTPPath: x.HTTPPath, HTTPStatus: x.HTTPStatus, Bytes: x.Bytes, MTLS: x.MTLS,
			Packets: x.Packets, DurationMs: x.DurationMs, SrcPrincipal: x.SrcPrincipal, DstPrincipal: x.DstPrincipal,
			PolicyNames: x.PolicyNames, TraceID: x.TraceID}
		if v := x.IPVersion; v != 0 && v != ipVersion(x.SrcIP) {
			r.IPVersion = &v
		}
		if err := enc.Encode(&r); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// ReadFlows reads a fixture written by WriteFlows. Like ingest's decoders
// it shares equal strings and equal label maps between the flows it
// returns: the label maps must not be modified.
func ReadFlows(path string) ([]schema.Flow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []schema.Flow
	in := &interner{strs: map[string]string{}, labelm: map[string]map[string]string{}}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		ipv := ipVersion(r.SrcIP)
		if r.IPVersion != nil {
			ipv = *r.IPVersion
		}
		out = append(out, schema.Flow{Time: r.Time, Node: in.str(r.Node), Source: schema.SourceKind(in.str(r.Source)),
			Verdict: schema.Verdict(in.str(r.Verdict)), DropReason: in.str(r.DropReason), Direction: schema.Direction(in.str(r.Direction)),
			IsReply: r.IsReply, IPVersion: ipv, Protocol: in.str(r.Protocol),
			SrcIP: r.SrcIP, DstIP: r.DstIP, SrcPort: r.SrcPort, DstPort: r.DstPort, TCPFlags: in.str(r.TCPFlags),
			Src: in.endpoint(r.Src), Dst: in.endpoint(r.Dst), DstNames: in.strings(r.DstNames), L7Type: in.str(r.L7Type),
			DNSQuery: in.str(r.DNSQuery), DNSRCode: r.DNSRCode, DNSQType: in.str(r.DNSQType), HTTPMethod: in.str(r.HTTPMethod),
			HTTPPath: in.str(r.HTTPPath), HTTPStatus: r.HTTPStatus, Bytes: r.Bytes, MTLS: r.MTLS,
			Packets: r.Packets, DurationMs: r.DurationMs, SrcPrincipal: in.str(r.SrcPrincipal), DstPrincipal: in.str(r.DstPrincipal),
			PolicyNames: in.strings(r.PolicyNames), TraceID: r.TraceID})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// Diff reports how got differs from want ("" when they are the same flows)
// up to what a fixture does not keep: a time's location, nil against
// empty label maps and name lists, an unset IPVersion.
func Diff(want, got []schema.Flow) string {
	return cmp.Diff(normalize(want), normalize(got), cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty())
}

func normalize(flows []schema.Flow) []schema.Flow {
	out := make([]schema.Flow, len(flows))
	for i, f := range flows {
		f.Time = f.Time.UTC()
		if f.IPVersion == 0 {
			f.IPVersion = ipVersion(f.SrcIP)
		}
		out[i] = f
	}
	return out
}
