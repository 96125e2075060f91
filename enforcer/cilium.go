package enforcer

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// Cilium flavour: the same least-privilege set as CiliumNetworkPolicies, so
// that egress to names seen in DNS can be allowed by name (toFQDNs, with the
// DNS proxy rule it needs) rather than by address.

// CiliumPolicy is a CiliumNetworkPolicy as written to YAML.
type CiliumPolicy struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       CiliumRule     `json:"spec"`
}

// CiliumRule is the spec of a CiliumNetworkPolicy (the fields flowwarden writes).
type CiliumRule struct {
	EndpointSelector Selector        `json:"endpointSelector"`
	Ingress          []CiliumIngress `json:"ingress,omitempty"`
	Egress           []CiliumEgress  `json:"egress,omitempty"`
}

// Selector is a label selector in Cilium's form.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// CiliumIngress is an ingress rule.
type CiliumIngress struct {
	FromEndpoints []Selector `json:"fromEndpoints,omitempty"`
	FromCIDRSet   []CIDRRule `json:"fromCIDRSet,omitempty"`
	ToPorts       []PortRule `json:"toPorts,omitempty"`
}

// CiliumEgress is an egress rule.
type CiliumEgress struct {
	ToEndpoints []Selector     `json:"toEndpoints,omitempty"`
	ToCIDRSet   []CIDRRule     `json:"toCIDRSet,omitempty"`
	ToFQDNs     []FQDNSelector `json:"toFQDNs,omitempty"`
	ToPorts     []PortRule     `json:"toPorts,omitempty"`
}

// CIDRRule is a CIDR with exceptions.
type CIDRRule struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// FQDNSelector names a DNS name.
type FQDNSelector struct {
	MatchName string `json:"matchName"`
}

// PortRule lists ports, with L7 rules.
type PortRule struct {
	Ports []PortProtocol `json:"ports"`
	Rules *L7Rules       `json:"rules,omitempty"`
}

// PortProtocol is a port.
type PortProtocol struct {
	Port     string `json:"port"`
	Protocol string `json:"protocol"`
}

// L7Rules holds DNS rules (for the DNS proxy behind toFQDNs) and, with
// --l7, HTTP rules (ciliuml7.go).
type L7Rules struct {
	HTTP []HTTPRule `json:"http,omitempty"`
	DNS  []DNSRule  `json:"dns,omitempty"`
}

// DNSRule allows DNS lookups matching a pattern.
type DNSRule struct {
	MatchPattern string `json:"matchPattern"`
}

const ciliumNS = "k8s:io.kubernetes.pod.namespace"

// ToCilium converts a generated result. Egress towards addresses that were
// reached by a DNS name is also allowed by name (toFQDNs); the CIDRs stay,
// with the metadata exceptions.
func ToCilium(res *Result, g *Graph) []CiliumPolicy {
	g.Settle()
	// Names per workload and port reached outside the cluster.
	names := map[string]map[string][]string{} // workload → "proto/port" → names
	// A name reached by an edge held back as evidence of a finding is
	// never allowed by name: it would let the attack's destination in.
	heldNames := map[string]bool{}
	for _, s := range res.HeldBack() {
		if s.Edge.From.Kind == PeerWorkload && s.Edge.To.Name != "" {
			heldNames[s.Edge.From.Workload+" "+strings.TrimSuffix(s.Edge.To.Name, ".")] = true
		}
	}
	for e := range g.Edges {
		if e.From.Kind != PeerWorkload || e.To.Kind == PeerWorkload || e.To.Name == "" {
			continue
		}
		if heldNames[e.From.Workload+" "+strings.TrimSuffix(e.To.Name, ".")] {
			continue
		}
		if names[e.From.Workload] == nil {
			names[e.From.Workload] = map[string][]string{}
		}
		pk := e.Protocol + "/" + strconv.Itoa(int(e.Port))
		n := strings.TrimSuffix(e.To.Name, ".")
		if !containsString(names[e.From.Workload][pk], n) {
			names[e.From.Workload][pk] = append(names[e.From.Workload][pk], n)
		}
	}
	var out []CiliumPolicy
	for _, np := range res.Policies {
		cp := CiliumPolicy{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy",
			Metadata: map[string]any{"name": np.Name, "namespace": np.Namespace, "labels": np.Labels},
			Spec:     CiliumRule{EndpointSelector: Selector{MatchLabels: prefixed(np.Spec.PodSelector.MatchLabels)}}}
		workload := np.Namespace + "/" + strings.TrimPrefix(np.Name, "flowwarden-")
		// An empty rule puts the endpoints in default deny for the direction.
		cp.Spec.Ingress = []CiliumIngress{{}}
		for _, r := range np.Spec.Ingress {
			in := CiliumIngress{ToPorts: ciliumPorts(r.Ports, false)}
			for _, p := range r.From {
				if p.IPBlock != nil {
					in.FromCIDRSet = append(in.FromCIDRSet, CIDRRule{CIDR: p.IPBlock.CIDR, Except: p.IPBlock.Except})
				} else {
					in.FromEndpoints = append(in.FromEndpoints, endpointSelector(p, np.Namespace))
				}
			}
			// Cilium takes endpoints and CIDRs in separate rules.
			if len(in.FromEndpoints) > 0 && len(in.FromCIDRSet) > 0 {
				cidrs := CiliumIngress{FromCIDRSet: in.FromCIDRSet, ToPorts: in.ToPorts}
				in.FromCIDRSet = nil
				cp.Spec.Ingress = append(cp.Spec.Ingress, in, cidrs)
				continue
			}
			cp.Spec.Ingress = append(cp.Spec.Ingress, in)
		}
		for i, r := range np.Spec.Egress {
			eg := CiliumEgress{ToPorts: ciliumPorts(r.Ports, i == 0)}
			fqdn := map[string]bool{}
			for _, p := range r.To {
				if p.IPBlock == nil {
					eg.ToEndpoints = append(eg.ToEndpoints, endpointSelector(p, np.Namespace))
					continue
				}
				eg.ToCIDRSet = append(eg.ToCIDRSet, CIDRRule{CIDR: p.IPBlock.CIDR, Except: p.IPBlock.Except})
			}
			for _, port := range r.Ports {
				for _, n := range names[workload][string(*port.Protocol)+"/"+port.Port.String()] {
					fqdn[n] = true
				}
			}
			if len(eg.ToCIDRSet) > 0 && len(fqdn) > 0 {
				// The names the workload resolved get a toFQDNs rule, so the
				// allow follows the service when its addresses change; the
				// observed CIDRs stay, for addresses reached without a name.
				var fq []FQDNSelector
				for _, n := range sortedKeys(fqdn) {
					fq = append(fq, FQDNSelector{MatchName: n})
				}
				cp.Spec.Egress = append(cp.Spec.Egress, CiliumEgress{ToFQDNs: fq, ToPorts: eg.ToPorts})
			}
			if len(eg.ToEndpoints) > 0 && len(eg.ToCIDRSet) > 0 {
				cidrs := CiliumEgress{ToCIDRSet: eg.ToCIDRSet, ToPorts: eg.ToPorts}
				eg.ToCIDRSet = nil
				cp.Spec.Egress = append(cp.Spec.Egress, eg, cidrs)
				continue
			}
			cp.Spec.Egress = append(cp.Spec.Egress, eg)
		}
		out = append(out, cp)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return fmt.Sprint(out[i].Metadata["namespace"], out[i].Metadata["name"]) < fmt.Sprint(out[j].Metadata["namespace"], out[j].Metadata["name"])
	})
	return out
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func prefixed(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out["k8s:"+k] = v
	}
	return out
}

func endpointSelector(p networkingv1.NetworkPolicyPeer, policyNS string) Selector {
	m := map[string]string{}
	if p.PodSelector != nil {
		for k, v := range p.PodSelector.MatchLabels {
			m["k8s:"+k] = v
		}
	}
	ns := policyNS
	if p.NamespaceSelector != nil {
		ns = p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
	}
	m[ciliumNS] = ns
	return Selector{MatchLabels: m}
}

// ciliumPorts converts ports; the DNS rule (dns=true) also enables the DNS
// proxy that toFQDNs relies on.
func ciliumPorts(ports []networkingv1.NetworkPolicyPort, dns bool) []PortRule {
	if len(ports) == 0 {
		return nil
	}
	pr := PortRule{}
	for _, p := range ports {
		proto := "TCP"
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		port := "0"
		if p.Port != nil {
			port = p.Port.String()
		}
		pr.Ports = append(pr.Ports, PortProtocol{Port: port, Protocol: proto})
	}
	if dns {
		pr.Rules = &L7Rules{DNS: []DNSRule{{MatchPattern: "*"}}}
	}
	return []PortRule{pr}
}

// MarshalCilium renders one policy as YAML.
func MarshalCilium(cp CiliumPolicy) ([]byte, error) {
	return yaml.Marshal(cp)
}
