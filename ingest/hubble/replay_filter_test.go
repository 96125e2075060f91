package hubble

import (
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"
)

func mustFlow(t *testing.T, js string) *flowpb.Flow {
	t.Helper()
	var f flowpb.Flow
	if err := protojson.Unmarshal([]byte(js), &f); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &f
}

func mustFilter(t *testing.T, js string) *flowpb.FlowFilter {
	t.Helper()
	var f flowpb.FlowFilter
	if err := protojson.Unmarshal([]byte(js), &f); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &f
}

// Flows shaped like the published samples.
const (
	// A TCP flow from bookinfo/reviews to the host, a reply, traced.
	flowReviewsToHost = `{"verdict":"FORWARDED","IP":{"source":"10.0.2.16","destination":"10.0.2.1","ipVersion":"IPv4"},
		"l4":{"TCP":{"source_port":15020,"destination_port":42044,"flags":{"FIN":true,"ACK":true}}},
		"source":{"identity":25339,"namespace":"bookinfo","pod_name":"reviews-v1-545db77b95-s6jb8",
			"labels":["k8s:app=reviews","k8s:io.kubernetes.pod.namespace=bookinfo","k8s:version=v1"],
			"workloads":[{"name":"reviews-v1","kind":"Deployment"}]},
		"destination":{"identity":1,"labels":["reserved:host"]},
		"node_name":"gke-demo-1-zr1l","is_reply":true,"event_type":{"type":4,"sub_type":3},"traffic_direction":"INGRESS"}`
	// A dropped UDP DNS query from default/client to kube-dns, direction unknown.
	flowDroppedDNS = `{"verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","IP":{"source":"10.0.1.5","destination":"10.96.0.10","ipVersion":"IPv4"},
		"l4":{"UDP":{"source_port":40000,"destination_port":53}},
		"source":{"identity":9000,"namespace":"default","pod_name":"client-7d9f","labels":["k8s:app=client"]},
		"destination":{"identity":102,"namespace":"kube-system","pod_name":"coredns-1","labels":["k8s:k8s-app=kube-dns"]},
		"destination_names":["kube-dns.kube-system.svc.cluster.local"],
		"node_name":"prod/worker-2","event_type":{"type":1,"sub_type":133},"traffic_direction":"EGRESS",
		"l7":{"dns":{"query":"api.github.com."}}}`
	// An L7 HTTP response to the world, forward direction.
	flowHTTP = `{"verdict":"FORWARDED","IP":{"source":"10.0.1.7","destination":"140.82.112.3","ipVersion":"IPv4"},
		"l4":{"TCP":{"source_port":51000,"destination_port":443,"flags":{"SYN":true}}},
		"source":{"identity":9001,"namespace":"shop","pod_name":"frontend-1","labels":["k8s:app=frontend","k8s:tier=web"]},
		"destination":{"identity":2,"labels":["reserved:world","cidr:140.82.112.0/20"]},
		"destination_names":["api.github.com"],
		"node_name":"worker-1","is_reply":false,"event_type":{"type":129},
		"l7":{"type":"RESPONSE","http":{"code":404,"method":"get","url":"https://api.github.com/repos/x?page=2",
			"headers":[{"key":"x-trace","value":"1"}]}}}`
	// A flow without endpoints' namespace or pod, ICMP, IPv6.
	flowICMP = `{"verdict":"FORWARDED","IP":{"source":"fd00::1","destination":"fd00::2","ipVersion":"IPv6"},
		"l4":{"ICMPv6":{"type":128}},"event_type":{"type":4}}`
)

func TestReplayFilterSemantics(t *testing.T) {
	flows := map[string]*flowpb.Flow{
		"reviews": mustFlow(t, flowReviewsToHost),
		"dns":     mustFlow(t, flowDroppedDNS),
		"http":    mustFlow(t, flowHTTP),
		"icmp":    mustFlow(t, flowICMP),
	}
	order := []string{"reviews", "dns", "http", "icmp"}
	for _, tc := range []struct {
		name   string
		filter string // one FlowFilter, as JSON
		want   string // the flows it keeps, in order
	}{
		{"empty filter keeps all", `{}`, "reviews dns http icmp"},
		// Pods and namespaces: "ns/prefix", a bare name means namespace default.
		{"namespace as ns/", `{"source_pod":["bookinfo/"]}`, "reviews"},
		{"pod prefix in namespace", `{"source_pod":["bookinfo/reviews-v1"]}`, "reviews"},
		{"bare pod name is in default", `{"source_pod":["reviews"]}`, ""},
		{"bare pod name in default matches", `{"source_pod":["client"]}`, "dns"},
		{"either namespace of two", `{"destination_pod":["kube-system/","shop/"]}`, "dns"},
		{"slash alone: any named endpoint", `{"source_pod":["/"]}`, "reviews dns http"},
		{"namespace wrong", `{"source_pod":["kube-system/coredns"]}`, ""},
		// Labels: selectors over Cilium labels, with or without source.
		{"label any source", `{"source_label":["app=reviews"]}`, "reviews"},
		{"label with source", `{"source_label":["k8s:app=reviews"]}`, "reviews"},
		{"label other source", `{"source_label":["reserved:app=reviews"]}`, ""},
		{"label set", `{"source_label":["app in (reviews, frontend)"]}`, "reviews http"},
		{"label and within selector", `{"source_label":["app=frontend,tier=web"]}`, "http"},
		{"label not exists", `{"source_label":["!app"]}`, "icmp"},
		{"label dotted key", `{"source_label":["k8s:io.kubernetes.pod.namespace=bookinfo"]}`, "reviews"},
		{"reserved label exists", `{"destination_label":["reserved:world"]}`, "http"},
		{"cidr label within", `{"destination_label":["cidr:140.82.0.0/16"]}`, "http"},
		{"label alternatives", `{"destination_label":["reserved:host","k8s-app=kube-dns"]}`, "reviews dns"},
		// Addresses.
		{"ip exact", `{"source_ip":["10.0.1.5"]}`, "dns"},
		{"ip cidr", `{"destination_ip":["10.0.0.0/8"]}`, "reviews dns"},
		{"ipv6 cidr", `{"source_ip":["fd00::/64"]}`, "icmp"},
		{"ip version", `{"ip_version":["IPv6"]}`, "icmp"},
		// Names.
		{"fqdn wildcard", `{"destination_fqdn":["*.github.com"]}`, "http"},
		{"fqdn is anchored", `{"destination_fqdn":["github.com"]}`, ""},
		{"fqdn pattern case and trailing dot", `{"destination_fqdn":["API.github.com."]}`, "http"},
		{"fqdn wildcard spans dots", `{"destination_fqdn":["kube-dns.*"]}`, "dns"},
		{"dns query regexp", `{"dns_query":["github\\.com\\.$"]}`, "dns"},
		// Verdicts, drop reasons, reply.
		{"verdict", `{"verdict":["DROPPED"]}`, "dns"},
		{"verdicts OR", `{"verdict":["DROPPED","FORWARDED"]}`, "reviews dns http icmp"},
		{"drop reason", `{"drop_reason_desc":["POLICY_DENIED"]}`, "dns"},
		{"reply true", `{"reply":[true]}`, "reviews"},
		{"reply false takes unknown drops", `{"reply":[false]}`, "dns http"},
		// Ports and protocols.
		{"destination port", `{"destination_port":["53"]}`, "dns"},
		{"ports OR", `{"destination_port":["53","443"]}`, "dns http"},
		{"source port tcp", `{"source_port":["15020"]}`, "reviews"},
		{"protocol", `{"protocol":["UDP"]}`, "dns"},
		{"protocol icmp", `{"protocol":["icmp"]}`, "icmp"},
		{"protocol l7", `{"protocol":["dns","http"]}`, "dns http"},
		{"tcp flags subset", `{"tcp_flags":[{"SYN":true}]}`, "http"},
		{"tcp flags all needed", `{"tcp_flags":[{"FIN":true,"SYN":true}]}`, ""},
		// Nodes.
		{"node wildcard, default cluster", `{"node_name":["gke-*"]}`, "reviews"},
		{"node explicit default cluster", `{"node_name":["default/worker-*"]}`, "http"},
		{"node other cluster", `{"node_name":["prod/"]}`, "dns"},
		{"node without cluster: any cluster", `{"node_name":["worker-*"]}`, "dns http"},
		// Event types.
		{"event type", `{"event_type":[{"type":4}]}`, "reviews icmp"},
		{"event subtype", `{"event_type":[{"type":4,"match_sub_type":true,"sub_type":3}]}`, "reviews"},
		{"event type l7", `{"event_type":[{"type":129}]}`, "http"},
		// HTTP.
		{"http status exact", `{"http_status_code":["404"]}`, "http"},
		{"http status prefix", `{"http_status_code":["4+"]}`, "http"},
		{"http status prefix 2", `{"http_status_code":["40+"]}`, "http"},
		{"http status other", `{"http_status_code":["2+"]}`, ""},
		{"http method any case", `{"http_method":["GET"]}`, "http"},
		{"http path regexp on path only", `{"http_path":["^/repos/[a-z]+$"]}`, "http"},
		{"http url regexp", `{"http_url":["page=2"]}`, "http"},
		{"http header", `{"http_header":[{"key":"x-trace","value":"1"}]}`, "http"},
		{"http with l7 event type", `{"event_type":[{"type":129}],"http_method":["get"]}`, "http"},
		// Identities, workloads, direction.
		{"identity", `{"source_identity":[9000,9001]}`, "dns http"},
		{"workload name", `{"source_workload":[{"name":"reviews-v1"}]}`, "reviews"},
		{"workload kind", `{"source_workload":[{"kind":"StatefulSet"}]}`, ""},
		{"traffic direction", `{"traffic_direction":["EGRESS"]}`, "dns"},
		// AND within one filter.
		{"AND within a filter", `{"verdict":["FORWARDED"],"protocol":["tcp"],"destination_port":["443"]}`, "http"},
		{"AND can empty", `{"verdict":["DROPPED"],"protocol":["tcp"]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rf, err := newRequestFilter([]*flowpb.FlowFilter{mustFilter(t, tc.filter)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range order {
				if rf.keep(flows[n]) {
					got = append(got, n)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("%s keeps %q, want %q", tc.filter, strings.Join(got, " "), tc.want)
			}
		})
	}
}

func TestReplayFilterListsOrAndBlacklist(t *testing.T) {
	flows := []*flowpb.Flow{mustFlow(t, flowReviewsToHost), mustFlow(t, flowDroppedDNS), mustFlow(t, flowHTTP), mustFlow(t, flowICMP)}
	keep := func(allow, deny []string) string {
		t.Helper()
		var wl, bl []*flowpb.FlowFilter
		for _, s := range allow {
			wl = append(wl, mustFilter(t, s))
		}
		for _, s := range deny {
			bl = append(bl, mustFilter(t, s))
		}
		rf, err := newRequestFilter(wl, bl)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, f := range flows {
			if rf.keep(f) {
				out = append(out, string(rune('a'+i)))
			}
		}
		return strings.Join(out, "")
	}
	// OR across the whitelist's filters.
	if got := keep([]string{`{"verdict":["DROPPED"]}`, `{"protocol":["icmp"]}`}, nil); got != "bd" {
		t.Fatalf("whitelist OR: %q, want bd", got)
	}
	// The blacklist drops what the whitelist kept.
	if got := keep([]string{`{"protocol":["tcp"]}`}, []string{`{"source_pod":["shop/"]}`}); got != "a" {
		t.Fatalf("blacklist after whitelist: %q, want a", got)
	}
	// A blacklist alone; any of its filters drops.
	if got := keep(nil, []string{`{"verdict":["DROPPED"]}`, `{"ip_version":["IPv6"]}`}); got != "ac" {
		t.Fatalf("blacklist OR: %q, want ac", got)
	}
	// An empty filter in the blacklist drops everything.
	if got := keep(nil, []string{`{}`}); got != "" {
		t.Fatalf("empty blacklist filter: %q, want nothing", got)
	}
}

func TestReplayFilterRejectsWhatHubbleRejects(t *testing.T) {
	for _, js := range []string{
		`{"source_ip":["10.0.0.300"]}`,
		`{"destination_ip":["10.0.0.0/33"]}`,
		`{"source_pod":[""]}`,
		`{"destination_port":["65536"]}`,
		`{"destination_port":["http"]}`,
		`{"protocol":["quic"]}`,
		`{"source_fqdn":["bad name"]}`,
		`{"node_name":["a/b/c"]}`,
		`{"source_label":["app in (a"]}`,
		`{"http_status_code":["600"]}`,
		`{"http_status_code":["4"]}`,
		`{"http_path":["("]}`,
		`{"dns_query":["["]}`,
		`{"event_type":[{"type":4}],"http_method":["GET"]}`,
		`{"source_cluster_name":[""]}`,
		`{"experimental":{"cel_expression":["true"]}}`,
	} {
		if _, err := newRequestFilter([]*flowpb.FlowFilter{mustFilter(t, js)}, nil); err == nil {
			t.Errorf("%s: accepted, want an error", js)
		}
	}
}

func TestTranslateSelector(t *testing.T) {
	for in, want := range map[string]string{
		"app=web":                       "any.app=web",
		"k8s:app=web":                   "k8s.app=web",
		"!app":                          "!any.app",
		"app in (a, b),k8s:tier!=db":    "any.app in (a, b),k8s.tier!=db",
		"k8s:io.kubernetes.pod.name":    "k8s.io.kubernetes.pod.name",
		"reserved:world, app notin (x)": "reserved.world, any.app notin (x)",
	} {
		if got := translateSelector(in); got != want {
			t.Errorf("translateSelector(%q) = %q, want %q", in, got, want)
		}
	}
}
