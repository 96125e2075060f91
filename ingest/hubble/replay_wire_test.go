package hubble

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
)

// What the replay sends pre-marshalled decodes to exactly the message it
// would otherwise build, for every recorded flow (every field the samples
// use), shifted to now or by a later pass, and what a client receives
// through the server is that message too.
func TestReplayWireEqualsMessage(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/*.json")
	for _, shift := range []bool{false, true} {
		r, err := NewReplay(ReplayConfig{Files: files, Loop: true, ShiftToNow: shift, Rate: 1000}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{0, 1, r.Len() - 1, r.Len(), r.Len() + 7, 3*r.Len() + 1} {
			var got observer.GetFlowsResponse
			if err := proto.Unmarshal(r.wireAt(i, r.timeAt(i)), &got); err != nil {
				t.Fatalf("shift=%v flow %d: %v", shift, i, err)
			}
			if want := r.flowAt(i); !proto.Equal(&got, want) {
				t.Fatalf("shift=%v flow %d:\n got %v\nwant %v", shift, i, &got, want)
			}
		}
		for i := range r.Len() {
			var got observer.GetFlowsResponse
			if err := proto.Unmarshal(r.wireAt(i+r.Len(), r.timeAt(i+r.Len())), &got); err != nil || !proto.Equal(&got, r.flowAt(i+r.Len())) {
				t.Fatalf("shift=%v flow %d differs (%v)", shift, i+r.Len(), err)
			}
		}
	}

	// Through the server: the second pass arrives pre-marshalled.
	r, c, _ := replayClient(t, ReplayConfig{Loop: true})
	got, err := collect(context.Background(), t, c, &observer.GetFlowsRequest{Follow: true}, 2*r.Len())
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range got {
		if want := r.flowAt(i).GetFlow(); !proto.Equal(f, want) {
			t.Fatalf("flow %d received:\n got %v\nwant %v", i, f, want)
		}
	}
}
