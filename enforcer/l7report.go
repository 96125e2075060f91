package enforcer

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/flowwarden/flowwarden/schema"
)

// L7Usage counts, for the least-privilege report, how many observed
// requests each layer-7 rule allowed (a rule nobody used is access nobody
// needs), and the requests the rules would deny.
type L7Usage struct {
	p       *L7Policies
	order   []string
	counts  map[string]uint64
	Judged  uint64
	Denied  uint64
	Denials []string // the first few denied requests, with the reason
}

const maxL7Denials = 20

// NewL7Usage lists every rule of the policies with a count of zero.
func NewL7Usage(p *L7Policies) *L7Usage {
	u := &L7Usage{p: p, counts: map[string]uint64{}}
	for _, ap := range p.Istio {
		for i := range ap.Spec.Rules {
			u.key(istioRuleKey(ap, i))
		}
	}
	for _, cp := range p.Cilium {
		eachCiliumHTTP(cp, func(k string, _ HTTPRule, _ bool, _ PortProtocol) { u.key(k) })
	}
	return u
}

func (u *L7Usage) key(k string) {
	if _, ok := u.counts[k]; !ok {
		u.counts[k] = 0
		u.order = append(u.order, k)
	}
}

func istioRuleKey(ap AuthorizationPolicy, i int) string {
	b, _ := json.Marshal(ap.Spec.Rules[i])
	return fmt.Sprintf("istio %v/%v rule %d: %s", ap.Metadata["namespace"], ap.Metadata["name"], i+1, b)
}

func eachCiliumHTTP(cp CiliumPolicy, fn func(key string, r HTTPRule, ingress bool, pp PortProtocol)) {
	name := fmt.Sprintf("%v/%v", cp.Metadata["namespace"], cp.Metadata["name"])
	visit := func(ingress bool, prs []PortRule) {
		dir := "egress"
		if ingress {
			dir = "ingress"
		}
		for _, pr := range prs {
			if pr.Rules == nil {
				continue
			}
			for _, pp := range pr.Ports {
				for _, r := range pr.Rules.HTTP {
					fn(fmt.Sprintf("cilium %s %s %s/%s: method %s path %s", name, dir, pp.Protocol, pp.Port, r.Method, r.Path), r, ingress, pp)
				}
			}
		}
	}
	for _, r := range cp.Spec.Ingress {
		visit(true, r.ToPorts)
	}
	for _, r := range cp.Spec.Egress {
		visit(false, r.ToPorts)
	}
}

// Add judges one flow and counts the rules that allowed it.
func (u *L7Usage) Add(f *schema.Flow) {
	judged, allowed, why := u.p.JudgeL7(f)
	if !judged {
		return
	}
	u.Judged++
	if !allowed {
		u.Denied++
		if len(u.Denials) < maxL7Denials {
			u.Denials = append(u.Denials, fmt.Sprintf("%s %s → %s %s/%d %s %s: %s", f.Time.UTC().Format("2006-01-02T15:04:05Z"),
				endpointName(&f.Src, f.SrcIP.String()), endpointName(&f.Dst, f.DstIP.String()), f.Protocol, f.DstPort, f.HTTPMethod, f.HTTPPath, why))
		}
		return
	}
	if f.Source == schema.SourceEnvoy {
		o := NewIstioObservations("")
		o.Add(f)
		for r := range o.Requests {
			for _, ap := range u.p.Istio {
				if ns, _ := ap.Metadata["namespace"].(string); ns != f.Dst.Namespace || !labelsMatch(ap.Spec.Selector, f.Dst.Labels) {
					continue
				}
				for i, rule := range ap.Spec.Rules {
					if rule.matches(r) {
						u.counts[istioRuleKey(ap, i)]++
					}
				}
			}
		}
		return
	}
	path := requestPath(f.HTTPPath)
	for _, cp := range u.p.Cilium {
		ns, _ := cp.Metadata["namespace"].(string)
		eachCiliumHTTP(cp, func(k string, r HTTPRule, ingress bool, pp PortProtocol) {
			ep := &f.Src
			if ingress {
				ep = &f.Dst
			}
			if ns != ep.Namespace || !ciliumSelects(cp.Spec.EndpointSelector, ep) || !strings.EqualFold(pp.Protocol, f.Protocol) || pp.Port != fmt.Sprint(f.DstPort) {
				return
			}
			if ok, _ := CiliumHTTPAllows([]HTTPRule{r}, f.HTTPMethod, path); ok {
				u.counts[k]++
			}
		})
	}
}

func labelsMatch(sel *WorkloadSelector, labels map[string]string) bool {
	if sel == nil {
		return true
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func endpointName(e *schema.Endpoint, ip string) string {
	if e.Namespace != "" && e.Workload != "" {
		return e.Namespace + "/" + e.Workload
	}
	return ip
}

// Unused is the rules no observed request matched.
func (u *L7Usage) Unused() []string {
	var out []string
	for _, k := range u.order {
		if u.counts[k] == 0 {
			out = append(out, k)
		}
	}
	return out
}

// WriteMarkdown writes the layer-7 part of the report.
func (u *L7Usage) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# Layer 7: HTTP rules against observed requests\n\n")
	fmt.Fprintf(&b, "%d Istio AuthorizationPolicies and %d CiliumNetworkPolicies; %d observed HTTP requests judged, %d would be denied.\n\n",
		len(u.p.Istio), len(u.p.Cilium), u.Judged, u.Denied)
	b.WriteString("## Rules and the requests they allowed\n\n| rule | requests |\n|---|---|\n")
	for _, k := range u.order {
		fmt.Fprintf(&b, "| `%s` | %d |\n", strings.ReplaceAll(k, "|", `\|`), u.counts[k])
	}
	if unused := u.Unused(); len(unused) > 0 {
		fmt.Fprintf(&b, "\n%d rules allowed no observed request: access nobody used.\n", len(unused))
	}
	if len(u.Denials) > 0 {
		b.WriteString("\n## Denied requests (first ones)\n\n")
		for _, d := range u.Denials {
			b.WriteString("- " + d + "\n")
		}
	}
	if len(u.p.Unsupported) > 0 {
		b.WriteString("\n## Not judged\n\n")
		for _, s := range u.p.Unsupported {
			b.WriteString("- " + s + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
