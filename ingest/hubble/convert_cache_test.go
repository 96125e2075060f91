package hubble

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestFromProtoLabelCache: the observer's conversion, which shares the
// label maps of repeated label lists, gives exactly FromProto's records on
// the samples, and does share them.
func TestFromProtoLabelCache(t *testing.T) {
	var cache labelCache
	shared := 0
	seen := map[string]map[string]string{}
	for _, lines := range sampleLines(t) {
		for _, line := range lines {
			var resp observer.GetFlowsResponse
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &resp); err != nil || resp.GetFlow() == nil {
				continue
			}
			want, werr := FromProto(resp.GetFlow(), resp.GetTime().AsTime(), resp.GetNodeName())
			got, gerr := fromProto(resp.GetFlow(), resp.GetTime().AsTime(), resp.GetNodeName(), &cache)
			if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("cached conversion differs:\n got %+v %v\nwant %+v %v", got, gerr, want, werr)
			}
			key := fmt.Sprint(resp.GetFlow().GetSource().GetLabels())
			if m, ok := seen[key]; ok && got.Src.Labels != nil {
				if reflect.ValueOf(m).UnsafePointer() != reflect.ValueOf(got.Src.Labels).UnsafePointer() {
					t.Fatalf("labels %s not shared", key)
				}
				shared++
			}
			seen[key] = got.Src.Labels
		}
	}
	if shared == 0 {
		t.Fatal("no repeated label list in the samples")
	}
}
