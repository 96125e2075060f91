// Package hubble ingests Cilium Hubble flows: from the observer gRPC API
// (GetFlows, as served by Hubble Relay or a Cilium agent) and from the Hubble
// exporter's JSON-lines files. Both paths end in schema.Flow.
package hubble

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/flowwarden/flowwarden/schema"
)

// ErrNoFlow marks a GetFlowsResponse that carries something other than a flow
// (node status, lost events): not an error, nothing to store.
var ErrNoFlow = errors.New("not a flow event")

// FromProto converts a Hubble flow into a flow record. fallbackTime and
// fallbackNode come from the enclosing GetFlowsResponse and are used when the
// flow itself lacks them. It is the reference conversion: the fast JSON
// decoder and the observer's wire decoder must produce exactly what this
// produces.
func FromProto(f *flowpb.Flow, fallbackTime time.Time, fallbackNode string) (schema.Flow, error) {
	var out schema.Flow
	out.Source = schema.SourceHubble
	out.Time = fallbackTime
	if ts := f.GetTime(); ts != nil {
		out.Time = ts.AsTime()
	}
	if out.Time.IsZero() {
		return out, errors.New("flow has no time")
	}
	if err := schema.CheckTime("time", out.Time); err != nil {
		return out, err
	}
	out.Node = f.GetNodeName()
	if out.Node == "" {
		out.Node = fallbackNode
	}
	var err error
	if out.Verdict, err = verdictName(int32(f.GetVerdict())); err != nil {
		return out, err
	}
	//lint:ignore SA1019 older agents fill only the numeric drop_reason
	out.DropReason = dropReasonName(int32(f.GetDropReasonDesc()), f.GetDropReason())
	out.Direction = directionName(int32(f.GetTrafficDirection()))
	if r := f.GetIsReply(); r != nil {
		out.IsReply = r.GetValue()
	} else {
		//lint:ignore SA1019 older agents fill only the deprecated reply flag
		out.IsReply = f.GetReply()
	}
	if ip := f.GetIP(); ip != nil {
		var err error
		if out.SrcIP, err = parseIP(ip.GetSource()); err != nil {
			return out, fmt.Errorf("IP.source: %w", err)
		}
		if out.DstIP, err = parseIP(ip.GetDestination()); err != nil {
			return out, fmt.Errorf("IP.destination: %w", err)
		}
		out.IPVersion = ipVersion(int32(ip.GetIpVersion()), out.SrcIP)
	}
	if l4 := f.GetL4(); l4 != nil {
		if err := checkPorts(l4); err != nil {
			return out, err
		}
		switch {
		case l4.GetTCP() != nil:
			t := l4.GetTCP()
			out.Protocol = "TCP"
			out.SrcPort, out.DstPort = uint16(t.GetSourcePort()), uint16(t.GetDestinationPort())
			if fl := t.GetFlags(); fl != nil {
				out.TCPFlags = schema.TCPFlagsString(tcpFlagBits(fl))
			}
		case l4.GetUDP() != nil:
			out.Protocol = "UDP"
			out.SrcPort, out.DstPort = uint16(l4.GetUDP().GetSourcePort()), uint16(l4.GetUDP().GetDestinationPort())
		case l4.GetSCTP() != nil:
			out.Protocol = "SCTP"
			out.SrcPort, out.DstPort = uint16(l4.GetSCTP().GetSourcePort()), uint16(l4.GetSCTP().GetDestinationPort())
		case l4.GetICMPv4() != nil:
			out.Protocol = "ICMPv4"
		case l4.GetICMPv6() != nil:
			out.Protocol = "ICMPv6"
		case l4.GetVRRP() != nil:
			out.Protocol = "VRRP"
		case l4.GetIGMP() != nil:
			out.Protocol = "IGMP"
		}
	}
	out.Src = endpointFromProto(f.GetSource())
	out.Dst = endpointFromProto(f.GetDestination())
	if n := f.GetDestinationNames(); len(n) > 0 {
		out.DstNames = append([]string(nil), n...)
	}
	if l7 := f.GetL7(); l7 != nil {
		if out.DurationMs, err = latencyMs(l7.GetLatencyNs()); err != nil {
			return out, err
		}
		switch {
		case l7.GetDns() != nil:
			out.L7Type = "dns"
			out.DNSQuery = l7.GetDns().GetQuery()
			if err := checkMax("l7.dns.rcode", uint64(l7.GetDns().GetRcode()), 1<<16-1); err != nil {
				return out, err
			}
			out.DNSRCode = uint16(l7.GetDns().GetRcode())
			out.DNSQType = joinQTypes(l7.GetDns().GetQtypes())
		case l7.GetHttp() != nil:
			h := l7.GetHttp()
			if err := checkMax("l7.http.code", uint64(h.GetCode()), maxHTTPStatus); err != nil {
				return out, err
			}
			out.L7Type = "http"
			out.HTTPMethod = h.GetMethod()
			out.HTTPPath = urlPath(h.GetUrl())
			out.HTTPStatus = uint16(h.GetCode())
		//lint:ignore SA1019 Kafka L7 records still appear in recorded flows
		case l7.GetKafka() != nil:
			out.L7Type = "kafka"
		}
	}
	for _, group := range [][]*flowpb.Policy{f.GetEgressAllowedBy(), f.GetIngressAllowedBy(), f.GetEgressDeniedBy(), f.GetIngressDeniedBy()} {
		for _, p := range group {
			out.PolicyNames = append(out.PolicyNames, policyName(p.GetNamespace(), p.GetName()))
		}
	}
	if tc := f.GetTraceContext(); tc != nil {
		out.TraceID = tc.GetParent().GetTraceId()
	}
	if err := out.Validate(); err != nil {
		return out, err
	}
	return out, nil
}

// checkPorts refuses a port above 65535 (the protocol's field is a uint32).
func checkPorts(l4 *flowpb.Layer4) error {
	type ports interface {
		GetSourcePort() uint32
		GetDestinationPort() uint32
	}
	var p ports
	switch {
	case l4.GetTCP() != nil:
		p = l4.GetTCP()
	case l4.GetUDP() != nil:
		p = l4.GetUDP()
	case l4.GetSCTP() != nil:
		p = l4.GetSCTP()
	default:
		return nil
	}
	if err := schema.CheckPort("l4.source_port", uint64(p.GetSourcePort())); err != nil {
		return err
	}
	return schema.CheckPort("l4.destination_port", uint64(p.GetDestinationPort()))
}

// maxHTTPStatus is the largest HTTP status code (three digits).
const maxHTTPStatus = 999

// checkMax refuses a number above max.
func checkMax(field string, v, max uint64) error {
	if v > max {
		return &schema.FieldError{Field: field, Reason: schema.ReasonValueRange, Value: fmt.Sprint(v)}
	}
	return nil
}

// latencyMs converts an L7 latency to the duration_ms column, refusing one
// it cannot hold (49 days).
func latencyMs(ns uint64) (uint32, error) {
	ms := ns / 1e6
	if err := checkMax("l7.latency_ns", ms, 1<<32-1); err != nil {
		return 0, err
	}
	return uint32(ms), nil
}

func endpointFromProto(e *flowpb.Endpoint) schema.Endpoint {
	var ep schema.Endpoint
	if e == nil {
		return ep
	}
	ep.Namespace = e.GetNamespace()
	ep.Pod = e.GetPodName()
	ep.Identity = e.GetIdentity()
	ep.Labels = labelMap(e.GetLabels())
	if w := e.GetWorkloads(); len(w) > 0 {
		ep.Workload, ep.WorkloadKind = w[0].GetName(), w[0].GetKind()
	}
	finishEndpoint(&ep, e.GetLabels())
	return ep
}

// finishEndpoint fills the workload of an endpoint whose source did not name
// it: reserved identities get kind "reserved", pods are named by their owner.
func finishEndpoint(ep *schema.Endpoint, rawLabels []string) {
	if ep.Workload != "" {
		return
	}
	if ep.Pod != "" {
		ep.Workload, ep.WorkloadKind = schema.WorkloadFromPod(ep.Pod, ep.Labels)
		return
	}
	if name := reservedName(rawLabels); name != "" {
		ep.Workload, ep.WorkloadKind = name, schema.KindReserved
	}
}

// reservedName names a non-pod identity from its labels: the last
// "reserved:" label ("host", "world", "kube-apiserver"), or "world" for CIDR
// and FQDN identities.
func reservedName(labels []string) string {
	name := ""
	for _, l := range labels {
		switch {
		case strings.HasPrefix(l, "reserved:"):
			name = l[len("reserved:"):]
		case name == "" && (strings.HasPrefix(l, "cidr:") || strings.HasPrefix(l, "fqdn:")):
			name = schema.ReservedWorld
		}
	}
	return name
}

// labelMap turns Cilium labels ("k8s:app=x", "reserved:world") into a map;
// the "k8s:" source prefix is dropped, other sources keep theirs.
func labelMap(labels []string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v := splitLabel(l)
		m[k] = v
	}
	return m
}

func splitLabel(l string) (key, value string) {
	l = strings.TrimPrefix(l, "k8s:")
	if i := strings.IndexByte(l, '='); i >= 0 {
		return l[:i], l[i+1:]
	}
	return l, ""
}

func policyName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// verdictName names a verdict number, refusing one this build does not know
// (it would otherwise pass for VERDICT_UNKNOWN).
func verdictName(v int32) (schema.Verdict, error) {
	if n, ok := flowpb.Verdict_name[v]; ok {
		return schema.Verdict(n), nil
	}
	return "", &schema.FieldError{Field: "verdict", Reason: schema.ReasonVerdict, Value: fmt.Sprint(v)}
}

func dropReasonName(desc int32, legacy uint32) string {
	if desc == 0 {
		desc = int32(legacy)
	}
	if desc == 0 {
		return ""
	}
	if n, ok := flowpb.DropReason_name[desc]; ok {
		return n
	}
	return fmt.Sprintf("DROP_REASON_%d", desc)
}

func directionName(d int32) schema.Direction {
	switch flowpb.TrafficDirection(d) {
	case flowpb.TrafficDirection_INGRESS:
		return schema.DirectionIngress
	case flowpb.TrafficDirection_EGRESS:
		return schema.DirectionEgress
	}
	return schema.DirectionUnknown
}

func ipVersion(v int32, src netip.Addr) uint8 {
	switch flowpb.IPVersion(v) {
	case flowpb.IPVersion_IPv4:
		return 4
	case flowpb.IPVersion_IPv6:
		return 6
	}
	switch {
	case !src.IsValid():
		return 0
	case src.Is4() || src.Is4In6():
		return 4
	}
	return 6
}

func parseIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid address %q", truncate(s, 64))
	}
	return a.Unmap(), nil
}

func tcpFlagBits(f *flowpb.TCPFlags) uint16 {
	var b uint16
	for i, set := range [...]bool{f.GetSYN(), f.GetACK(), f.GetFIN(), f.GetRST(), f.GetPSH(), f.GetURG(), f.GetECE(), f.GetCWR(), f.GetNS()} {
		if set {
			b |= 1 << i
		}
	}
	return b
}

// urlPath returns the path of an absolute or relative URL without parsing
// the whole URL (Hubble reports "http://host:port/path?query").
func urlPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
		j := strings.IndexByte(u, '/')
		if j < 0 {
			return "/"
		}
		u = u[j:]
	}
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return u
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// joinQTypes is Flow.DNSQType of Hubble's l7.dns.qtypes: the one type a
// query nearly always asks, without allocating, or several comma-joined.
func joinQTypes(q []string) string {
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q, ",")
}
