package hubble

import (
	"fmt"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The replay is a load generator too: at a hundred thousand flows a
// second, cloning and marshalling every GetFlowsResponse cost it more CPU
// than the client it feeds spends decoding them. So each recorded flow is
// marshalled once, without its time, when the recording is loaded; a send
// puts the time in front of those bytes (a Timestamp is a few bytes) and
// hands the result to gRPC through a codec that passes pre-marshalled
// messages through unchanged (wireCodec). What a client receives decodes to exactly
// the message flowAt builds (TestReplayWireEqualsMessage).

// GetFlowsResponse and Flow field numbers written by hand below.
const (
	respFlowField     protowire.Number = 1    // GetFlowsResponse.flow
	respNodeNameField protowire.Number = 1000 // GetFlowsResponse.node_name
	respTimeField     protowire.Number = 1001 // GetFlowsResponse.time
	flowTimeField     protowire.Number = 1    // Flow.time
)

// replayWire is one recorded flow marshalled without its times.
type replayWire struct {
	flow []byte // the Flow's fields except time
	node string // GetFlowsResponse.node_name
}

// encodeWire marshals every recorded flow once, without its time.
func (r *Replay) encodeWire() error {
	r.wire = make([]replayWire, len(r.flows))
	opts := proto.MarshalOptions{Deterministic: true}
	for i, resp := range r.flows {
		f := proto.Clone(resp.GetFlow()).(*flowpb.Flow)
		f.Time = nil
		b, err := opts.Marshal(f)
		if err != nil {
			return fmt.Errorf("replay: marshal flow %d: %w", i, err)
		}
		r.wire[i] = replayWire{flow: b, node: resp.GetNodeName()}
	}
	return nil
}

// wireAt is flowAt(i) in wire format: the flow's and the response's time
// are t (as flowAt sets them for a shifted flow).
func (r *Replay) wireAt(i int, t time.Time) preEncoded {
	w := &r.wire[i%len(r.flows)]
	var tsBuf [24]byte
	ts := tsBuf[:0]
	if s := t.Unix(); s != 0 {
		ts = protowire.AppendTag(ts, 1, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		ts = protowire.AppendTag(ts, 2, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(n))
	}
	tsField := protowire.SizeTag(flowTimeField) + protowire.SizeBytes(len(ts))
	flowLen := tsField + len(w.flow)
	size := protowire.SizeTag(respFlowField) + protowire.SizeBytes(flowLen) +
		protowire.SizeTag(respTimeField) + protowire.SizeBytes(len(ts))
	if w.node != "" {
		size += protowire.SizeTag(respNodeNameField) + protowire.SizeBytes(len(w.node))
	}
	b := make([]byte, 0, size)
	b = protowire.AppendTag(b, respFlowField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(flowLen))
	b = protowire.AppendTag(b, flowTimeField, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	b = append(b, w.flow...)
	if w.node != "" {
		b = protowire.AppendTag(b, respNodeNameField, protowire.BytesType)
		b = protowire.AppendString(b, w.node)
	}
	b = protowire.AppendTag(b, respTimeField, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	return b
}

// send sends the i-th flow of the sequence: pre-marshalled when it is a
// shifted flow sent whole, as a message otherwise (the recording's own
// first pass, which keeps its response times, or a masked flow).
func (r *Replay) send(stream grpc.ServerStreamingServer[observer.GetFlowsResponse], i int, mask flowMask) error {
	if mask == nil && (r.cfg.ShiftToNow || i >= len(r.flows)) {
		return stream.SendMsg(r.wireAt(i, r.timeAt(i)))
	}
	resp := r.flowAt(i)
	if mask != nil {
		resp = &observer.GetFlowsResponse{Time: resp.GetTime(), NodeName: resp.GetNodeName(),
			ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: mask.apply(resp.GetFlow())}}
	}
	return stream.Send(resp)
}
