package hubble

import (
	"errors"
	"reflect"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flowwarden/flowwarden/schema"
)

// wireOracle is the reference for wireDecoder: proto.Unmarshal, then
// FromProto, as the observer did before.
func wireOracle(msg []byte) (schema.Flow, error) {
	var resp observer.GetFlowsResponse
	if err := proto.Unmarshal(msg, &resp); err != nil {
		return schema.Flow{}, err
	}
	f := resp.GetFlow()
	if f == nil {
		return schema.Flow{}, ErrNoFlow
	}
	return FromProto(f, resp.GetTime().AsTime(), resp.GetNodeName())
}

// wireSamples are the published samples as GetFlowsResponse messages, plus
// hand-built flows with the fields the samples lack.
func wireSamples(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, lines := range sampleLines(t) {
		for _, line := range lines {
			var resp observer.GetFlowsResponse
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &resp); err != nil {
				t.Fatal(err)
			}
			b, err := proto.Marshal(&resp)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	ts := timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC))
	ep := func(ns, pod string, labels ...string) *flowpb.Endpoint {
		return &flowpb.Endpoint{Namespace: ns, PodName: pod, Identity: 4242, Labels: labels}
	}
	for _, f := range []*flowpb.Flow{
		{Time: ts, Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			IP:               &flowpb.IP{Source: "10.0.0.1", Destination: "fd00::2", IpVersion: flowpb.IPVersion_IPv6},
			L4:               &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 5, DestinationPort: 6}}},
			Source:           ep("a", "web-7d9f8c6b5-x2x2x", "k8s:app=web", "k8s:pod-template-hash=7d9f8c6b5"),
			Destination:      &flowpb.Endpoint{Labels: []string{"reserved:world", "cidr:1.2.3.0/24"}},
			DestinationNames: []string{"example.com", "www.example.com"}, IsReply: wrapperspb.Bool(true), Reply: false,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			EgressAllowedBy:  []*flowpb.Policy{{Name: "p1", Namespace: "a"}}, IngressAllowedBy: []*flowpb.Policy{{Name: "cluster-wide"}},
			EgressDeniedBy: []*flowpb.Policy{{Name: "d1", Namespace: "b"}}, IngressDeniedBy: []*flowpb.Policy{{Name: "d2", Namespace: "c"}},
			TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}}},
		{Time: ts, Verdict: flowpb.Verdict_FORWARDED, DropReason: 133, NodeName: "node-b",
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 443, DestinationPort: 51000,
				Flags: &flowpb.TCPFlags{FIN: true, RST: true, PSH: true, URG: true, ECE: true, CWR: true, NS: true}}}},
			Source:      &flowpb.Endpoint{Namespace: "x", PodName: "db-0", Workloads: []*flowpb.Workload{{Name: "db", Kind: "StatefulSet"}, {Name: "other", Kind: "Deployment"}}},
			Destination: &flowpb.Endpoint{Labels: []string{"reserved:host"}},
			L7:          &flowpb.Layer7{LatencyNs: 12_345_678, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: 404, Method: "GET", Url: "http://svc.ns:8080/api/v1/x?q=1#frag"}}}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}},
			L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "x.example.", Rcode: 3, Qtypes: []string{"TXT", "A"}}}}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 53, DestinationPort: 5353}}},
			L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: "https://host-without-path"}}}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 53}}}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{}}}, L7: &flowpb.Layer7{}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_VRRP{VRRP: &flowpb.VRRP{}}}, TraceContext: &flowpb.TraceContext{}},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_IGMP{IGMP: &flowpb.IGMP{}}}, IP: &flowpb.IP{Source: "1.2.3.4"}},
		{L4: &flowpb.Layer4{}, IP: &flowpb.IP{}}, // time from the response
		// Refused: unknown verdict, port and status and rcode out of range, bad
		// address, control characters, no time.
		{Time: ts, Verdict: 99},
		{Time: ts, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 70000}}}},
		{Time: ts, L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: 1000}}}},
		{Time: ts, L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Rcode: 1 << 16}}}},
		{Time: ts, L7: &flowpb.Layer7{LatencyNs: 1 << 63}},
		{Time: ts, IP: &flowpb.IP{Source: "10.0.0.300"}},
		{Time: ts, Source: ep("a\x07", "p")},
		{Time: ts, Source: ep("a", "p", "k8s:x=\x01")},
		{Time: ts, Destination: ep("a", "p", "k8s:x=\x01", "k8s:x=ok")}, // the map keeps "ok": accepted
		{Time: timestamppb.New(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))},
	} {
		for _, resp := range []*observer.GetFlowsResponse{
			{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f}, NodeName: "node-a", Time: timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC))},
			{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f}},
		} {
			b, err := proto.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	// Not flows.
	for _, resp := range []*observer.GetFlowsResponse{
		{ResponseTypes: &observer.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{}}},
		{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{NumEventsLost: 3}}},
		{},
	} {
		b, _ := proto.Marshal(resp)
		out = append(out, b)
	}
	return out
}

// TestWireDecoderAgreesWithFromProto is the oracle test: on every sample
// and hand-built message, and on pairs of them concatenated (which protobuf
// reads as one message merged from both: later fields win, a oneof member
// replaces another, repeated fields append), the wire decoder gives what
// proto.Unmarshal and FromProto give, and refuses what they refuse.
func TestWireDecoderAgreesWithFromProto(t *testing.T) {
	msgs := wireSamples(t)
	d := newWireDecoder()
	check := func(what string, msg []byte) {
		t.Helper()
		want, werr := wireOracle(msg)
		got, gerr := d.Decode(msg)
		if (werr == nil) != (gerr == nil) || errors.Is(werr, ErrNoFlow) != errors.Is(gerr, ErrNoFlow) {
			t.Fatalf("%s: oracle err=%v, wire err=%v", what, werr, gerr)
		}
		var wfe, gfe *schema.FieldError
		if errors.As(werr, &wfe) != errors.As(gerr, &gfe) || wfe != nil && wfe.Reason != gfe.Reason {
			t.Fatalf("%s: oracle err=%v, wire err=%v", what, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%s: records differ\noracle: %+v\nwire:   %+v", what, want, got)
		}
	}
	accepted := 0
	for i, m := range msgs {
		check("message "+itoa(i), m)
		if _, err := wireOracle(m); err == nil {
			accepted++
		}
	}
	if accepted < 1916+9 {
		t.Fatalf("%d messages accepted, want every sample and the hand-built ones", accepted)
	}
	// Merges: each hand-built message after a few others, and before.
	hand := msgs[len(msgs)-41:]
	for i, a := range hand {
		for j, b := range []([]byte){msgs[0], msgs[500], msgs[1500], hand[(i+1)%len(hand)], hand[(i+7)%len(hand)]} {
			check("merge "+itoa(i)+"+"+itoa(j), append(append([]byte(nil), a...), b...))
			check("merge "+itoa(j)+"+"+itoa(i), append(append([]byte(nil), b...), a...))
		}
		for k := range hand {
			check("merge "+itoa(i)+"+"+itoa(k)+"+"+itoa(i), append(append(append([]byte(nil), a...), hand[k]...), a...))
		}
		// A flow, then a node status (the oneof's other member), then another flow.
		for _, other := range msgs[len(msgs)-3:] {
			check("oneof "+itoa(i), append(append(append([]byte(nil), a...), other...), hand[(i+3)%len(hand)]...))
		}
	}
	// Cut short anywhere: refused, never a different flow.
	for _, m := range hand[:10] {
		for n := range len(m) {
			if _, err := d.Decode(m[:n]); err == nil {
				want, werr := wireOracle(m[:n])
				got, _ := d.Decode(m[:n])
				if werr != nil || !reflect.DeepEqual(want, got) {
					t.Fatalf("accepted %d of %d bytes differently from the oracle (%v)", n, len(m), werr)
				}
			}
		}
	}
}

func itoa(i int) string { return string(appendInt(nil, i)) }

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

// FuzzWireDecode feeds hostile messages to the wire decoder, seeded with
// the samples and the hand-built messages. It must never panic; a flow it
// accepts validates; where the oracle accepts, both give the same record;
// a value the oracle refuses as outside its type, the decoder refuses too.
func FuzzWireDecode(f *testing.F) {
	for i, m := range wireSamples(f) {
		if i%50 == 0 || i > 1900 {
			f.Add(m)
		}
	}
	d := newWireDecoder()
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := d.Decode(msg)
		want, werr := wireOracle(msg)
		var fe *schema.FieldError
		if err != nil {
			if werr == nil {
				t.Fatalf("refused (%v) what the oracle accepts", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted a value outside its type: %v", err)
		}
		if errors.As(werr, &fe) {
			t.Fatalf("oracle refused (%v), the wire decoder accepted", werr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("records differ\noracle: %+v\nwire:   %+v", want, got)
		}
		// Fresh caches agree with warmed ones.
		if again, err := newWireDecoder().Decode(msg); err != nil || !reflect.DeepEqual(got, again) {
			t.Fatalf("decoders disagree: %v", err)
		}
	})
}
