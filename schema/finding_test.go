package schema

import "testing"

// TestFindingSubject: the subject the CLI and the page print for a
// finding, and its record the same.
func TestFindingSubject(t *testing.T) {
	for _, c := range []struct {
		ns, workload, peer, want string
	}{
		{"shop", "web", "", "shop/web"},
		{"tenant-a", "", "bookinfo", "tenant-a → bookinfo"},
		{"tenant-a", "", "", "tenant-a"},
		{"", "node-1", "", "node-1"},
		{"shop", "web", "db", "shop/web → db"},
	} {
		f := Finding{Namespace: c.ns, Workload: c.workload, Peer: c.peer}
		if got := f.Subject(); got != c.want {
			t.Errorf("%+v: subject %q, want %q", c, got, c.want)
		}
		if got := f.Record().Subject(); got != c.want {
			t.Errorf("%+v: record's subject %q, want %q", c, got, c.want)
		}
	}
}
