package enforcer

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/schema"
)

// L7Policies are the layer-7 policies of a directory: Istio ALLOW
// AuthorizationPolicies and the HTTP rules of CiliumNetworkPolicies, judged
// with each project's semantics (istio.go, ciliuml7.go).
type L7Policies struct {
	Istio  []AuthorizationPolicy
	Cilium []CiliumPolicy
	// Unsupported names the AuthorizationPolicies not judged: other
	// actions (DENY, CUSTOM, AUDIT) or fields flowwarden does not write
	// (when, notPaths, hosts...). Requests they concern may be judged
	// wrongly: verify prints them.
	Unsupported []string
}

// Empty says there is nothing at layer 7 to judge.
func (p *L7Policies) Empty() bool {
	if len(p.Istio) > 0 {
		return false
	}
	for _, cp := range p.Cilium {
		for _, r := range cp.Spec.Ingress {
			if hasHTTP(r.ToPorts) {
				return false
			}
		}
		for _, r := range cp.Spec.Egress {
			if hasHTTP(r.ToPorts) {
				return false
			}
		}
	}
	return true
}

func hasHTTP(prs []PortRule) bool {
	for _, pr := range prs {
		if pr.Rules != nil && len(pr.Rules.HTTP) > 0 {
			return true
		}
	}
	return false
}

// ParseL7Policies reads the AuthorizationPolicies and CiliumNetworkPolicies
// of YAML documents; other kinds are skipped.
func ParseL7Policies(data []byte, into *L7Policies) error {
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return fmt.Errorf("l7 policies: %w", err)
		}
		switch head.Kind {
		case "AuthorizationPolicy":
			var ap AuthorizationPolicy
			if err := yaml.UnmarshalStrict(doc, &ap); err != nil {
				into.Unsupported = append(into.Unsupported, fmt.Sprintf("an AuthorizationPolicy with fields flowwarden does not judge (%v)", err))
				continue
			}
			if ap.Spec.Action != "" && ap.Spec.Action != "ALLOW" {
				into.Unsupported = append(into.Unsupported, fmt.Sprintf("AuthorizationPolicy %v/%v: action %s", ap.Metadata["namespace"], ap.Metadata["name"], ap.Spec.Action))
				continue
			}
			into.Istio = append(into.Istio, ap)
		case "CiliumNetworkPolicy":
			var cp CiliumPolicy
			if err := yaml.Unmarshal(doc, &cp); err != nil {
				return fmt.Errorf("CiliumNetworkPolicy: %w", err)
			}
			into.Cilium = append(into.Cilium, cp)
		}
	}
	return nil
}

// LoadL7Dir reads the .yaml/.yml files under dir.
func LoadL7Dir(dir string) (*L7Policies, error) {
	p := &L7Policies{}
	err := eachYAMLFile(dir, func(path string, b []byte) error {
		before := len(p.Unsupported)
		if err := ParseL7Policies(b, p); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for i := before; i < len(p.Unsupported); i++ {
			p.Unsupported[i] = path + ": " + p.Unsupported[i]
		}
		return nil
	})
	return p, err
}

// JudgeL7 judges an observed HTTP request by the layer-7 policies: judged
// is false when no L7 policy concerns it (not HTTP, a reply, or no L7
// rule on its port). Istio judges the sidecar's inbound log lines; Cilium
// the HTTP flows its proxy saw, on the destination's ingress and the
// source's egress. For Cilium, a port with HTTP rules in one rule and none
// in another rule selecting the same endpoint is taken as allowing any
// request (Cilium's merge then wildcards L7 for the peers of the L4-only
// rule; peers are not told apart here).
func (p *L7Policies) JudgeL7(f *schema.Flow) (judged, allowed bool, reason string) {
	if f.HTTPMethod == "" || !Counts(f) || FlowOpener(f) == OpenedByDestination {
		return false, false, ""
	}
	if f.Source == schema.SourceEnvoy && f.Direction == schema.DirectionIngress && len(p.Istio) > 0 && f.Dst.Namespace != "" {
		o := NewIstioObservations("")
		o.Add(f)
		for r := range o.Requests {
			ok, why := IstioAllows(p.Istio, f.Dst.Namespace, f.Dst.Labels, r)
			return true, ok, "istio: " + why
		}
	}
	if f.Source == schema.SourceEnvoy {
		return false, false, ""
	}
	path := requestPath(f.HTTPPath)
	for _, side := range []struct {
		ingress bool
		ep      *schema.Endpoint
		ip      netip.Addr
	}{{true, &f.Dst, f.DstIP}, {false, &f.Src, f.SrcIP}} {
		// Only a pod whose labels are known can be matched to selectors
		// (Cilium sometimes gives only reserved labels).
		if pe, ok := FlowEndpoint(side.ep, side.ip); !ok || pe.Pod == nil || !podLabelsKnown(side.ep.Labels) {
			continue
		}
		rules, l4Only, found := p.ciliumHTTP(side.ep, side.ingress, f.Protocol, f.DstPort)
		if !found || l4Only {
			continue
		}
		ok, err := CiliumHTTPAllows(rules, f.HTTPMethod, path)
		dir := "egress of " + side.ep.Namespace + "/" + side.ep.Workload
		if side.ingress {
			dir = "ingress of " + side.ep.Namespace + "/" + side.ep.Workload
		}
		if err != nil {
			return true, false, "cilium: " + err.Error()
		}
		if !ok {
			return true, false, fmt.Sprintf("cilium: no HTTP rule on %s %s/%d matches %s %s", dir, f.Protocol, f.DstPort, f.HTTPMethod, path)
		}
		judged, allowed, reason = true, true, "cilium: an HTTP rule on "+dir+" matches"
	}
	return judged, allowed, reason
}

// ciliumHTTP gathers the HTTP rules on a port of the policies selecting ep.
func (p *L7Policies) ciliumHTTP(ep *schema.Endpoint, ingress bool, proto string, port uint16) (rules []HTTPRule, l4Only, found bool) {
	if ep.Namespace == "" {
		return nil, false, false
	}
	for _, cp := range p.Cilium {
		if ns, _ := cp.Metadata["namespace"].(string); ns != ep.Namespace || !ciliumSelects(cp.Spec.EndpointSelector, ep) {
			continue
		}
		for _, pr := range ciliumPortRules(cp, ingress) {
			for _, pp := range pr.Ports {
				if !strings.EqualFold(pp.Protocol, proto) || (pp.Port != strconv.Itoa(int(port)) && pp.Port != "0") {
					continue
				}
				found = true
				if pr.Rules == nil || len(pr.Rules.HTTP) == 0 {
					l4Only = true
					continue
				}
				rules = append(rules, pr.Rules.HTTP...)
			}
		}
	}
	return rules, l4Only, found
}

func ciliumSelects(sel Selector, ep *schema.Endpoint) bool {
	for k, v := range sel.MatchLabels {
		key := strings.TrimPrefix(k, "k8s:")
		if key == "io.kubernetes.pod.namespace" {
			if ep.Namespace != v {
				return false
			}
			continue
		}
		if ep.Labels[key] != v {
			return false
		}
	}
	return true
}

// ciliumPortRules is the port rules of a policy's ingress (or egress) rules.
func ciliumPortRules(cp CiliumPolicy, ingress bool) []PortRule {
	var prs []PortRule
	if ingress {
		for _, r := range cp.Spec.Ingress {
			prs = append(prs, r.ToPorts...)
		}
	} else {
		for _, r := range cp.Spec.Egress {
			prs = append(prs, r.ToPorts...)
		}
	}
	return prs
}
