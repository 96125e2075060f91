package schema

import "testing"

func TestWorkloadFromPod(t *testing.T) {
	cases := []struct {
		pod    string
		labels map[string]string
		name   string
		kind   string
	}{
		{"reviews-v1-545db77b95-s6jb8", nil, "reviews-v1", "Deployment"},
		{"ratings-v1-b6994bb9-4dt5c", nil, "ratings-v1", "Deployment"},
		{"coredns-558bd4d5db-9grjv", map[string]string{"k8s-app": "kube-dns"}, "coredns", "Deployment"},
		{"node-local-dns-88zrp", nil, "node-local-dns", ""},
		{"cilium-x7k2p", map[string]string{"controller-revision-hash": "6f9d"}, "cilium", "DaemonSet"},
		{"web-0", map[string]string{"statefulset.kubernetes.io/pod-name": "web-0"}, "web", "StatefulSet"},
		{"backup-28312-xk2zq", map[string]string{"job-name": "backup-28312"}, "backup-28312", "Job"},
		{"xwing", nil, "xwing", "Pod"},
		{"my-backend", nil, "my-backend", "Pod"},
		{"", nil, "", ""},
	}
	for _, c := range cases {
		name, kind := WorkloadFromPod(c.pod, c.labels)
		if name != c.name || kind != c.kind {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", c.pod, name, kind, c.name, c.kind)
		}
	}
}

func TestTCPFlagsString(t *testing.T) {
	if got := TCPFlagsString(1 | 2); got != "SYN,ACK" {
		t.Fatalf("got %q", got)
	}
	if got := TCPFlagsString(0); got != "" {
		t.Fatalf("got %q", got)
	}
	if got := TCPFlagsString(1 << 9); got != "" {
		t.Fatalf("out-of-range bits: got %q", got)
	}
}
