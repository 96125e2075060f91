package enforcer

import (
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema"
)

// TestPRBodyNamesFlowsBySelector: the PR body points at the flows behind
// its first allow through a selector the storage package renders: the
// policy's workload on the side that receives (ingress) or opens (egress),
// its port, requests only, newest 50; without a renderer it says nothing.
func TestPRBodyNamesFlowsBySelector(t *testing.T) {
	for _, c := range []struct {
		direction string
		want      schema.FlowSelector
	}{
		{"ingress", schema.FlowSelector{Dst: schema.EndpointSelector{Namespace: "shop", Workload: "api"}, DstPort: 8080}},
		{"egress", schema.FlowSelector{Src: schema.EndpointSelector{Namespace: "shop", Workload: "api"}, DstPort: 8080}},
	} {
		res := &Result{Evidence: []RuleEvidence{{Policy: "shop/flowwarden-api", Direction: c.direction, Peer: "web", Port: "TCP/8080"}}}
		var got schema.FlowSelector
		body := PRBody("t", res, &PRResult{}, func(sel schema.FlowSelector, columns string) string {
			got = sel
			return "RENDERED " + columns
		})
		if !strings.Contains(body, "```sql\nRENDERED time, src_pod,") {
			t.Fatalf("%s: the rendered query is not in the body:\n%s", c.direction, body)
		}
		if got.Src != c.want.Src || got.Dst != c.want.Dst || got.DstPort != 8080 || got.Replies == nil || *got.Replies || !got.NewestFirst || got.Limit != 50 {
			t.Fatalf("%s: selector %+v", c.direction, got)
		}
		if body := PRBody("t", res, &PRResult{}, nil); strings.Contains(body, "```sql") {
			t.Fatalf("%s: a query without a renderer", c.direction)
		}
	}
}
