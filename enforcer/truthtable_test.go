package enforcer

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Kubernetes e2e network policy tests, transcribed as data (see
// testdata/netpol/k8s-e2e): every probe of every step must come out as the
// upstream reachability matrix says.

type truthTable struct {
	Tests []struct {
		Name      string   `json:"name"`
		Protocols []string `json:"server_protocols"`
		Ports     []int32  `json:"server_ports"`
		Pods      []string `json:"pods"`
		Policies  []struct {
			Namespace string          `json:"namespace"`
			Name      string          `json:"name"`
			Spec      json.RawMessage `json:"spec"`
		} `json:"policies"`
		Steps []struct {
			Probe struct {
				Port     int32  `json:"port"`
				Protocol string `json:"protocol"`
			} `json:"probe"`
			Default bool     `json:"expect_default"`
			Actions []string `json:"actions_before"`
			Deltas  []struct {
				From    string `json:"from"`
				To      string `json:"to"`
				Allowed bool   `json:"allowed"`
			} `json:"deltas"`
		} `json:"steps"`
	} `json:"tests"`
}

// world is the cluster of one test: pods, namespace labels, policies.
type world struct {
	pods     []*Pod
	nsLabels map[string]map[string]string
	policies []networkingv1.NetworkPolicy
}

func (w *world) pod(name string) *Pod {
	for _, p := range w.pods {
		if p.Namespace+"/"+p.Name == name {
			return p
		}
	}
	panic("no pod " + name)
}

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func tcp() *corev1.Protocol { p := corev1.ProtocolTCP; return &p }

// actions are the upstream tests' mutations between steps, keyed by the
// transcription's wording.
var actions = map[string]func(w *world){
	"create policy x/allow-client-a-via-ns-selector-80: podSelector pod=a, ingress from namespaceSelector {kubernetes.io/metadata.name: y} ports [80/TCP]": func(w *world) {
		port := intOrStr(80)
		w.policies = append(w.policies, policy("x", "allow-client-a-via-ns-selector-80", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "y"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port, Protocol: tcp()}},
			}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		}))
	},
	"update policy: spec.ingress = [] (deny all ingress)": func(w *world) {
		w.policies[0].Spec.Ingress = nil
	},
	"label namespace y ns2=updated": func(w *world) { w.nsLabels["y"]["ns2"] = "updated" },
	"label pod x/b pod=b,pod2=updated": func(w *world) {
		w.pod("x/b").Labels = map[string]string{"pod": "b", "pod2": "updated"}
	},
	"label pod x/a target=isolated": func(w *world) { w.pod("x/a").Labels["target"] = "isolated" },
	"create policy x/allow-ingress: podSelector {} ingress [{}] (allow all)": func(w *world) {
		w.policies = append(w.policies, policy("x", "allow-ingress", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{}}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}))
	},
	"create policy x/allow-egress: podSelector {} egress [{}] (allow all)": func(w *world) {
		w.policies = append(w.policies, policy("x", "allow-egress", networkingv1.NetworkPolicySpec{
			Egress: []networkingv1.NetworkPolicyEgressRule{{}}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}))
	},
	"delete all network policies": func(w *world) { w.policies = nil },
	"UPDATE same-named policy to egress to ipBlock <IP of x/b>/32 only": func(w *world) {
		w.policies[0].Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: w.pod("x/b").IP.String() + "/32"}}}}}
	},
	"create policy x/deny-ingress-via-label-selector: podSelector pod=a, policyTypes [Ingress], ingress []": func(w *world) {
		w.policies = append(w.policies, policy("x", "deny-ingress-via-label-selector", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}))
	},
}

func matchesPattern(pattern string, p *Pod) bool {
	if pattern == "*" {
		return true
	}
	ns, name, _ := strings.Cut(pattern, "/")
	return ns == p.Namespace && (name == "*" || name == p.Name)
}

func TestKubernetesE2ETruthTable(t *testing.T) {
	raw, err := os.ReadFile("../testdata/netpol/k8s-e2e/e2e-netpol-truthtable-cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var tt truthTable
	if err := json.Unmarshal(raw, &tt); err != nil {
		t.Fatal(err)
	}
	if len(tt.Tests) != 48 {
		t.Fatalf("%d cases, want 48", len(tt.Tests))
	}
	probes := 0
	for ti, tc := range tt.Tests {
		t.Run(fmt.Sprintf("%02d-%s", ti, tc.Name), func(t *testing.T) {
			w := &world{nsLabels: map[string]map[string]string{}}
			nsIndex := map[string]int{}
			for _, name := range tc.Pods {
				ns, pod, _ := strings.Cut(name, "/")
				if _, ok := nsIndex[ns]; !ok {
					nsIndex[ns] = len(nsIndex) + 1
					w.nsLabels[ns] = map[string]string{"kubernetes.io/metadata.name": ns}
				}
				p := &Pod{Namespace: ns, Name: pod, Labels: map[string]string{"pod": pod},
					IP: netip.AddrFrom4([4]byte{10, byte(nsIndex[ns]), 0, byte(len(w.pods) + 1)})}
				for _, port := range tc.Ports {
					for _, proto := range tc.Protocols {
						p.Ports = append(p.Ports, NamedPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(proto)), Port: port, Protocol: corev1.Protocol(proto)})
					}
				}
				w.pods = append(w.pods, p)
			}
			for _, pol := range tc.Policies {
				spec := string(pol.Spec)
				for _, p := range w.pods {
					spec = strings.ReplaceAll(spec, "<IP of "+p.Namespace+"/"+p.Name+">", p.IP.String())
				}
				spec = strings.ReplaceAll(spec, "<large CIDR around IP of x/b (makeLargeCIDRForIP)>", "10.0.0.0/8")
				spec = strings.ReplaceAll(spec, "<large CIDR around IP of x/b>", "10.0.0.0/8")
				var s networkingv1.NetworkPolicySpec
				if err := json.Unmarshal([]byte(spec), &s); err != nil {
					t.Fatalf("policy %s: %v", pol.Name, err)
				}
				w.policies = append(w.policies, policy(pol.Namespace, pol.Name, s))
			}
			for si, step := range tc.Steps {
				for _, a := range step.Actions {
					fn, ok := actions[a]
					if !ok {
						t.Fatalf("no encoding of the action %q", a)
					}
					fn(w)
				}
				ev, err := NewEvaluator(w.policies, func(ns string) map[string]string { return w.nsLabels[ns] })
				if err != nil {
					t.Fatal(err)
				}
				for _, from := range w.pods {
					for _, to := range w.pods {
						if from == to {
							continue // upstream ignores loopback
						}
						want := step.Default
						for _, d := range step.Deltas {
							if matchesPattern(d.From, from) && matchesPattern(d.To, to) {
								want = d.Allowed
							}
						}
						got := ev.Evaluate(Connection{Src: Endpoint{Pod: from}, Dst: Endpoint{Pod: to}, Port: step.Probe.Port, Protocol: corev1.Protocol(step.Probe.Protocol)})
						probes++
						if got.Allowed != want {
							t.Errorf("step %d: %s/%s → %s/%s port %d/%s: allowed=%v, want %v (%s)", si, from.Namespace, from.Name,
								to.Namespace, to.Name, step.Probe.Port, step.Probe.Protocol, got.Allowed, want, got.Reason)
						}
					}
				}
			}
		})
	}
	t.Logf("%d probes checked", probes)
}
