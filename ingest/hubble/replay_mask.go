package hubble

import (
	"errors"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// flowMask is a GetFlows field mask as a tree of field names: a nil subtree
// keeps the whole field. The Hubble CLI sends one by default for its
// compact, dict and table output (the fields it prints), and
// --field-mask for JSON output.
type flowMask map[string]flowMask

// newFlowMask validates a request's mask against the Flow message (nil when
// the request has none).
func newFlowMask(fm *fieldmaskpb.FieldMask) (flowMask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	if !fm.IsValid(&flowpb.Flow{}) {
		return nil, errors.New("invalid field mask: " + strings.Join(fm.GetPaths(), ","))
	}
	norm := &fieldmaskpb.FieldMask{Paths: append([]string(nil), fm.GetPaths()...)}
	norm.Normalize() // sorted, and "a" absorbs "a.b"
	m := flowMask{}
	for _, p := range norm.GetPaths() {
		m.add(p)
	}
	return m, nil
}

func (m flowMask) add(path string) {
	head, rest, nested := strings.Cut(path, ".")
	if !nested {
		m[head] = nil
		return
	}
	if m[head] == nil {
		m[head] = flowMask{}
	}
	m[head].add(rest)
}

// apply returns a new flow holding only the masked fields of f. Kept
// values are shared with f, which must not change afterwards. As Hubble
// does, a masked path into a message field creates that message (empty when
// f lacks it), except in a oneof whose other member is set.
func (m flowMask) apply(f *flowpb.Flow) *flowpb.Flow {
	out := &flowpb.Flow{}
	m.copy(out.ProtoReflect(), f.ProtoReflect())
	return out
}

func (m flowMask) copy(dst, src protoreflect.Message) {
	fields := dst.Descriptor().Fields()
	for name, sub := range m {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			continue // validated against Flow: cannot happen
		}
		if len(sub) == 0 {
			if src.Has(fd) {
				dst.Set(fd, src.Get(fd))
			}
			continue
		}
		if od := fd.ContainingOneof(); od != nil {
			if set := src.WhichOneof(od); set == nil || set.Name() != fd.Name() {
				continue
			}
		}
		sub.copy(dst.Mutable(fd).Message(), src.Get(fd).Message())
	}
}
