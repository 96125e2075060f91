package clickhouse

import "testing"

// TestShareOfStoredReplies: a stored reply whose namespaces belong to two
// shards may be of either (Hubble's is_reply or only the deprecated reply
// flag), so it is surely of neither and maybe of both.
func TestShareOfStoredReplies(t *testing.T) {
	mine := func(ns string) bool { return ns == "a" }
	for _, tc := range []struct {
		src, dst      string
		reply         bool
		maybe, surely bool
	}{
		{"a", "b", false, true, true},
		{"b", "a", false, false, false},
		{"a", "a", true, true, true},
		{"b", "a", true, true, false},
		{"a", "b", true, true, false},
		{"b", "c", true, false, false},
		{"a", "", true, true, true},
		{"", "a", true, true, false},
	} {
		maybe, surely := share(tc.src, tc.dst, tc.reply, mine)
		if maybe != tc.maybe || surely != tc.surely {
			t.Errorf("%s -> %s reply=%v: maybe %v surely %v; want %v %v", tc.src, tc.dst, tc.reply, maybe, surely, tc.maybe, tc.surely)
		}
	}
}
