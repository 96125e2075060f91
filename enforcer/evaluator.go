// Package enforcer turns observed traffic into least-privilege network
// policies and proves them: workload identity, the observed-edge graph,
// NetworkPolicy generation, a policy evaluator with Kubernetes semantics,
// verification of policies against flows, and delivery as a pull request.
package enforcer

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is what the evaluator knows of a pod.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr
	// Ports are the pod's named container ports, for named-port rules.
	Ports []NamedPort
}

// NamedPort is a named container port.
type NamedPort struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol
}

// Endpoint is one side of a connection: a pod, or an address outside the cluster.
type Endpoint struct {
	Pod *Pod
	IP  netip.Addr
}

func (e Endpoint) addr() netip.Addr {
	if e.Pod != nil && e.Pod.IP.IsValid() {
		return e.Pod.IP
	}
	return e.IP
}

func (e Endpoint) String() string {
	if e.Pod != nil {
		return e.Pod.Namespace + "/" + e.Pod.Name
	}
	return e.IP.String()
}

// Connection is a connection attempt to be judged.
type Connection struct {
	Src, Dst Endpoint
	Port     int32
	Protocol corev1.Protocol
}

// Decision is the evaluator's answer, with the reason.
type Decision struct {
	Allowed bool
	// Reason names the side that denied and the policies that isolated it,
	// or the policies that allowed.
	Reason string
	// For a denial: the side that denied ("egress" of the source or
	// "ingress" of the destination) and the policies ("namespace/name")
	// that isolate that pod for that side, none of whose rules allows it.
	Side     string
	Isolated []string
}

// Evaluator decides whether NetworkPolicies allow a connection, by the
// Kubernetes NetworkPolicy semantics: a pod is isolated for a direction when
// any policy selects it with that policy type; an isolated pod accepts only
// what the union of those policies' rules allows; a connection needs both
// the source's egress and the destination's ingress.
type Evaluator struct {
	policies []compiled
	nsLabels func(namespace string) map[string]string
	byNS     map[string][]int
}

type compiled struct {
	np       *networkingv1.NetworkPolicy
	selector labels.Selector
	ingress  bool
	egress   bool
	inRules  []compiledRule
	egRules  []compiledRule
}

type compiledRule struct {
	peers []compiledPeer // empty: any peer
	ports []networkingv1.NetworkPolicyPort
}

type compiledPeer struct {
	pods       labels.Selector // nil: no pod selector
	namespaces labels.Selector // nil: the policy's namespace
	block      *ipBlock
}

type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

// NewEvaluator compiles the policies. nsLabels returns a namespace's labels;
// namespaces always carry kubernetes.io/metadata.name.
func NewEvaluator(policies []networkingv1.NetworkPolicy, nsLabels func(string) map[string]string) (*Evaluator, error) {
	e := &Evaluator{nsLabels: nsLabels, byNS: map[string][]int{}}
	for i := range policies {
		c, err := compile(&policies[i])
		if err != nil {
			return nil, fmt.Errorf("policy %s/%s: %w", policies[i].Namespace, policies[i].Name, err)
		}
		e.byNS[policies[i].Namespace] = append(e.byNS[policies[i].Namespace], len(e.policies))
		e.policies = append(e.policies, c)
	}
	return e, nil
}

// policyTypes are the directions np isolates: its policyTypes, or when it
// names none, the API server's default: Ingress always, Egress when egress
// rules are present.
func policyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		types = append(types, networkingv1.PolicyTypeEgress)
	}
	return types
}

func compile(np *networkingv1.NetworkPolicy) (compiled, error) {
	c := compiled{np: np}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return c, fmt.Errorf("podSelector: %w", err)
	}
	c.selector = sel
	for _, t := range policyTypes(np) {
		switch t {
		case networkingv1.PolicyTypeIngress:
			c.ingress = true
		case networkingv1.PolicyTypeEgress:
			c.egress = true
		}
	}
	for _, r := range np.Spec.Ingress {
		cr, err := compileRule(r.From, r.Ports)
		if err != nil {
			return c, fmt.Errorf("ingress: %w", err)
		}
		c.inRules = append(c.inRules, cr)
	}
	for _, r := range np.Spec.Egress {
		cr, err := compileRule(r.To, r.Ports)
		if err != nil {
			return c, fmt.Errorf("egress: %w", err)
		}
		c.egRules = append(c.egRules, cr)
	}
	return c, nil
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (compiledRule, error) {
	cr := compiledRule{ports: ports}
	for _, p := range peers {
		var cp compiledPeer
		if p.IPBlock != nil {
			cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
			if err != nil {
				return cr, fmt.Errorf("ipBlock.cidr: %w", err)
			}
			b := &ipBlock{cidr: cidr.Masked()}
			for _, ex := range p.IPBlock.Except {
				pe, err := netip.ParsePrefix(ex)
				if err != nil {
					return cr, fmt.Errorf("ipBlock.except: %w", err)
				}
				b.except = append(b.except, pe.Masked())
			}
			cp.block = b
		}
		if p.PodSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(p.PodSelector)
			if err != nil {
				return cr, fmt.Errorf("podSelector: %w", err)
			}
			cp.pods = s
		}
		if p.NamespaceSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
			if err != nil {
				return cr, fmt.Errorf("namespaceSelector: %w", err)
			}
			cp.namespaces = s
		}
		cr.peers = append(cr.peers, cp)
	}
	return cr, nil
}

// Evaluate judges one connection.
func (e *Evaluator) Evaluate(c Connection) Decision {
	var d Decision
	d.Allowed, d.Reason = e.judge(c, true)
	if !d.Allowed {
		d.Side = "ingress"
		pod := c.Dst.Pod
		if c.Src.Pod != nil {
			if ok, _ := e.side(c, c.Src.Pod, true, false); !ok {
				d.Side, pod = "egress", c.Src.Pod
			}
		}
		for _, i := range e.byNS[pod.Namespace] {
			p := &e.policies[i]
			if (d.Side == "egress" && p.egress || d.Side == "ingress" && p.ingress) && p.selector.Matches(labels.Set(pod.Labels)) {
				d.Isolated = append(d.Isolated, p.np.Namespace+"/"+p.np.Name)
			}
		}
	}
	return d
}

// Allows is Evaluate(c).Allowed without the reason: for callers that judge
// millions of connections (the semantic diff).
func (e *Evaluator) Allows(c Connection) bool {
	ok, _ := e.judge(c, false)
	return ok
}

func (e *Evaluator) judge(c Connection, explain bool) (bool, string) {
	if c.Protocol == "" {
		c.Protocol = corev1.ProtocolTCP
	}
	if c.Src.Pod != nil {
		if ok, why := e.side(c, c.Src.Pod, true, explain); !ok {
			return false, why
		}
	}
	if c.Dst.Pod != nil {
		if ok, why := e.side(c, c.Dst.Pod, false, explain); !ok {
			return false, why
		}
	}
	return true, "allowed"
}

// side checks the egress of the source (egress=true) or the ingress of the
// destination; explain asks for the reason.
func (e *Evaluator) side(c Connection, pod *Pod, egress, explain bool) (bool, string) {
	podLabels := labels.Set(pod.Labels)
	var isolating []string
	isolated := false
	for _, i := range e.byNS[pod.Namespace] {
		p := &e.policies[i]
		if egress && !p.egress || !egress && !p.ingress {
			continue
		}
		if !p.selector.Matches(podLabels) {
			continue
		}
		isolated = true
		if explain {
			isolating = append(isolating, p.np.Name)
		}
		rules := p.inRules
		peer := c.Src
		if egress {
			rules, peer = p.egRules, c.Dst
		}
		for _, r := range rules {
			if e.ruleAllows(r, p.np.Namespace, peer, c) {
				if !explain {
					return true, ""
				}
				return true, "allowed by " + p.np.Namespace + "/" + p.np.Name
			}
		}
	}
	if !isolated {
		return true, "not isolated"
	}
	if !explain {
		return false, ""
	}
	dir := "ingress to " + c.Dst.String()
	if egress {
		dir = "egress from " + c.Src.String()
	}
	return false, fmt.Sprintf("%s is isolated by %s/{%s} and no rule allows %s port %d/%s", dir, pod.Namespace, strings.Join(isolating, ","), peerName(egress, c), c.Port, c.Protocol)
}

func peerName(egress bool, c Connection) string {
	if egress {
		return "to " + c.Dst.String()
	}
	return "from " + c.Src.String()
}

func (e *Evaluator) ruleAllows(r compiledRule, policyNS string, peer Endpoint, c Connection) bool {
	if !portsAllow(r.ports, c) {
		return false
	}
	if len(r.peers) == 0 {
		return true
	}
	for _, p := range r.peers {
		if e.peerMatches(p, policyNS, peer) {
			return true
		}
	}
	return false
}

func (e *Evaluator) peerMatches(p compiledPeer, policyNS string, peer Endpoint) bool {
	if p.block != nil {
		a := peer.addr()
		if !a.IsValid() || !p.block.cidr.Contains(a) {
			return false
		}
		for _, ex := range p.block.except {
			if ex.Contains(a) {
				return false
			}
		}
		return true
	}
	if peer.Pod == nil {
		return false // selectors select pods only
	}
	if p.namespaces == nil {
		if peer.Pod.Namespace != policyNS {
			return false
		}
	} else if !p.namespaces.Matches(labels.Set(e.namespaceLabels(peer.Pod.Namespace))) {
		return false
	}
	return p.pods == nil || p.pods.Matches(labels.Set(peer.Pod.Labels))
}

func (e *Evaluator) namespaceLabels(ns string) map[string]string {
	var l map[string]string
	if e.nsLabels != nil {
		l = e.nsLabels(ns)
	}
	if l == nil {
		l = map[string]string{}
	}
	if _, ok := l[corev1.LabelMetadataName]; !ok {
		c := make(map[string]string, len(l)+1)
		for k, v := range l {
			c[k] = v
		}
		c[corev1.LabelMetadataName] = ns
		l = c
	}
	return l
}

// portsAllow applies a rule's ports: none means all; a named port is looked
// up on the destination pod (the server), for ingress and egress alike.
func portsAllow(ports []networkingv1.NetworkPolicyPort, c Connection) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != c.Protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String {
			if c.Dst.Pod == nil {
				continue
			}
			for _, np := range c.Dst.Pod.Ports {
				if np.Name == p.Port.StrVal && np.Port == c.Port && (np.Protocol == "" && proto == corev1.ProtocolTCP || np.Protocol == proto) {
					return true
				}
			}
			continue
		}
		lo := p.Port.IntVal
		hi := lo
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if c.Port >= lo && c.Port <= hi {
			return true
		}
	}
	return false
}
