package hubble

import (
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// preEncoded is a message already in wire format: wireCodec sends its
// bytes as they are (the replay's pre-marshalled flows).
type preEncoded []byte

// wireMsg receives a message undecoded: wireCodec copies its bytes into b
// (reusing b's array), for the observer's wireDecoder.
type wireMsg struct{ b []byte }

// wireCodec is gRPC's protobuf codec, except that it passes preEncoded
// messages out and wireMsg messages in without (un)marshalling them.
type wireCodec struct{ encoding.CodecV2 }

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2(grpcproto.Name) }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*wireMsg); ok {
		// gRPC frees data after this returns: the bytes are copied.
		m.b = m.b[:0]
		for _, buf := range data {
			m.b = append(m.b, buf.ReadOnlyData()...)
		}
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}
