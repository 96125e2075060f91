package hubble

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
)

func TestParseShard(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  Shard
		error string
	}{
		{in: "", want: Shard{0, 1}},
		{in: "0/1", want: Shard{0, 1}},
		{in: "1/2", want: Shard{1, 2}},
		{in: " 3 / 4 ", want: Shard{3, 4}},
		{in: "flowwarden-2/3", want: Shard{2, 3}},
		{in: "flowwarden-sharded-0/1", want: Shard{0, 1}},
		{in: "flowwarden-3/3", error: "i must be between 0 and 2"},
		{in: "flowwarden-/3", error: "want i/N"},
		{in: "2/2", error: "i must be between 0 and 1"},
		{in: "-1/2", error: "i must be between 0 and 1"},
		{in: "0/0", error: "N must be at least 1"},
		{in: "1", error: "want i/N"},
		{in: "a/b", error: "want i/N"},
	} {
		got, err := ParseShard(tc.in)
		if tc.error != "" {
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("ParseShard(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.error)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseShard(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	// 0/1 is the single replica: no filter at all.
	if w, b, ok := (Shard{0, 1}).Filters([]string{"a", "b"}); w != nil || b != nil || !ok {
		t.Errorf("0/1 filters: %v %v %v; want none", w, b, ok)
	}
}

func TestShardOf(t *testing.T) {
	if ShardOf("", 4) != 0 || ShardOf("bookinfo", 1) != 0 {
		t.Fatal("the empty namespace and N=1 belong to shard 0")
	}
	// FNV-1a 32 of "bookinfo" is 0x6a1b4c8e (documented in the README's
	// example): with N=3 it belongs to 1 + h mod 2.
	seen := map[int]bool{}
	for _, ns := range []string{"bookinfo", "kube-system", "istio-system", "jaeger", "tenant-a", "default", "monitoring"} {
		i := ShardOf(ns, 4)
		if i < 1 || i > 3 {
			t.Fatalf("ShardOf(%q, 4) = %d", ns, i)
		}
		seen[i] = true
	}
	if len(seen) < 2 {
		t.Errorf("seven namespaces all on one of three shards: %v", seen)
	}
}

// TestShardFiltersPartition evaluates every shard's GetFlows filters with
// the replay server's evaluator (Hubble's semantics) over the published
// samples and the incident scenarios: for N = 1..4 every flow is selected by
// exactly one shard, the one owning the namespace of the endpoint that
// opened the connection, which is what every detector keys on.
func TestShardFiltersPartition(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/hubble/basic-sample-*.json")
	scen, _ := filepath.Glob("../../testdata/scenarios/*.jsonl.gz")
	for _, f := range scen {
		if !strings.Contains(f, ".flows.") {
			files = append(files, f)
		}
	}
	r, err := NewReplay(ReplayConfig{Files: files}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var flows []*flowpb.Flow
	for _, resp := range r.flows {
		flows = append(flows, resp.GetFlow())
	}
	for _, js := range []string{flowReviewsToHost, flowDroppedDNS, flowHTTP, flowICMP} {
		flows = append(flows, mustFlow(t, js))
	}
	nss, err := r.GetNamespaces(context.Background(), &observer.GetNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var known []string
	for _, ns := range nss.GetNamespaces() {
		known = append(known, ns.GetNamespace())
	}
	known = append(known, "default") // flowDroppedDNS's
	isKnown := map[string]bool{}
	for _, ns := range known {
		isKnown[ns] = true
	}
	unknownReply := 0
	for n := 1; n <= 4; n++ {
		filters := make([]*requestFilter, n)
		for i := range n {
			w, b, ok := Shard{i, n}.Filters(known)
			if !ok {
				continue // selects nothing
			}
			rf, err := newRequestFilter(w, b)
			if err != nil {
				t.Fatalf("shard %d/%d: %v", i, n, err)
			}
			filters[i] = &rf
		}
		perShard := make([]int, n)
		for _, f := range flows {
			var got []int
			for i, rf := range filters {
				if rf != nil && rf.keep(f) {
					got = append(got, i)
				}
			}
			if len(got) != 1 {
				t.Fatalf("N=%d: flow selected by shards %v, want exactly one: %v", n, got, f)
			}
			perShard[got[0]]++
			// The detectors' key: the opening endpoint.
			rec, err := FromProto(f, f.GetTime().AsTime(), "")
			if err != nil {
				continue
			}
			opener := rec.Src.Namespace
			if rec.IsReply && isKnown[rec.Dst.Namespace] {
				opener = rec.Dst.Namespace
			}
			if !isKnown[opener] {
				opener = "" // not listed yet: shard 0 holds it until it is
			}
			if f.GetIsReply() == nil && rec.IsReply {
				unknownReply++ // only the deprecated reply flag says so
				continue
			}
			if want := ShardOf(opener, n); got[0] != want {
				t.Fatalf("N=%d: flow opened by namespace %q went to shard %d, want %d: %v", n, opener, got[0], want, f)
			}
		}
		t.Logf("N=%d: %d flows per shard %v", n, len(flows), perShard)
		if n > 1 && perShard[0] == 0 {
			t.Errorf("N=%d: shard 0 took nothing (world and host flows are in the samples)", n)
		}
		if n > 2 && perShard[1] == 0 && perShard[2] == 0 {
			t.Errorf("N=%d: the namespaces were not split", n)
		}
	}
	if unknownReply > 0 {
		t.Logf("%d flows are replies only by the deprecated reply flag", unknownReply/4)
	}
}

func TestShardFiltersSelectNothing(t *testing.T) {
	// Shard 2/3 owns none of these: it must not subscribe (an empty
	// whitelist would select everything).
	var only []string
	for _, ns := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if ShardOf(ns, 3) == 1 {
			only = append(only, ns)
		}
	}
	if len(only) == 0 {
		t.Skip("no namespace of shard 1 among the candidates")
	}
	if _, _, ok := (Shard{2, 3}).Filters(only); ok {
		t.Errorf("shard 2/3 with namespaces %v of shard 1 only: selects something", only)
	}
	if w, b, ok := (Shard{0, 3}).Filters(nil); w != nil || b != nil || !ok {
		t.Errorf("shard 0 with no namespace known: %v %v %v; want every flow", w, b, ok)
	}
}
