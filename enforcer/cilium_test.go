package enforcer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cilium/cilium/pkg/policy/api"
	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/schema"
)

// The Cilium flavour of the samples' policies is valid by Cilium's own rule
// sanitiser, and egress to a DNS name seen in the traffic is allowed by name.
func TestCiliumFlavour(t *testing.T) {
	flows := sampleFlows(t)
	// The published drop to one.one.one.one carries its DNS name; make a
	// forwarded twin so that the name is part of the allowed traffic.
	named := flows[0]
	for _, f := range flows {
		if f.Src.Namespace == "bookinfo" && f.Src.Workload == "productpage-v1" && !f.IsReply {
			named = f
			break
		}
	}
	named.Dst = schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Identity: 2}
	named.DstIP, named.DstPort, named.Protocol, named.Verdict = mustAddr("1.1.1.1"), 443, "TCP", schema.VerdictForwarded
	named.DstNames = []string{"one.one.one.one"}
	flows = append(flows, named)
	g, res := generate(t, flows, DefaultConfig())
	cps := ToCilium(res, g)
	if len(cps) != len(res.Policies) {
		t.Fatalf("%d Cilium policies for %d NetworkPolicies", len(cps), len(res.Policies))
	}
	sawFQDN := false
	for _, cp := range cps {
		y, err := MarshalCilium(cp)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal(y, &back); err != nil {
			t.Fatal(err)
		}
		var rule api.Rule
		if err := json.Unmarshal(back.Spec, &rule); err != nil {
			t.Fatalf("%v: %v\n%s", cp.Metadata["name"], err, y)
		}
		if err := rule.Sanitize(); err != nil {
			t.Errorf("%v/%v is not a valid Cilium rule: %v\n%s", cp.Metadata["namespace"], cp.Metadata["name"], err, y)
		}
		if strings.Contains(string(y), "matchName: one.one.one.one") {
			sawFQDN = true
		}
	}
	if !sawFQDN {
		t.Error("egress to one.one.one.one is not allowed by name")
	}
}
