package enforcer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// CiliumNetworkPolicy is a CiliumNetworkPolicy or a
// CiliumClusterwideNetworkPolicy as read for judging: Kubernetes metadata
// and Cilium's own rule type (github.com/cilium/cilium/pkg/policy/api), so
// that every field Cilium accepts is read and none is silently dropped.
// (Cilium's cilium.io/v2 object type is not used: it links Cilium's agent
// metrics and hive into the binary.)
type CiliumNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              *api.Rule       `json:"spec,omitempty"`
	Specs             api.Rules       `json:"specs,omitempty"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// Clusterwide says the policy is a CiliumClusterwideNetworkPolicy.
func (p *CiliumNetworkPolicy) Clusterwide() bool { return p.Kind == kindCCNP }

// Key names the policy as verify's output and the report do: namespace/name,
// or the name alone for a clusterwide policy.
func (p *CiliumNetworkPolicy) Key() string {
	if p.Clusterwide() {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

const (
	kindCNP  = "CiliumNetworkPolicy"
	kindCCNP = "CiliumClusterwideNetworkPolicy"
)

// ParseCiliumPolicies reads the CiliumNetworkPolicies and
// CiliumClusterwideNetworkPolicies of YAML documents (List objects too);
// other kinds are skipped. A policy with a field Cilium does not know, or
// with neither spec nor specs, is an error, as for the API server.
func ParseCiliumPolicies(raw []byte) ([]CiliumNetworkPolicy, error) {
	var out []CiliumNetworkPolicy
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	add := func(doc []byte, i int) error {
		var cp CiliumNetworkPolicy
		if err := yaml.UnmarshalStrict(doc, &cp); err != nil {
			return fmt.Errorf("document %d: %s: %w", i, cp.Kind, err)
		}
		if cp.Spec == nil && len(cp.Specs) == 0 {
			return fmt.Errorf("document %d: %s %s: neither spec nor specs", i, cp.Kind, cp.Name)
		}
		if cp.Name == "" {
			return fmt.Errorf("document %d: %s without a name", i, cp.Kind)
		}
		if cp.Kind == kindCNP && cp.Namespace == "" {
			cp.Namespace = "default"
		}
		if cp.Kind == kindCCNP {
			cp.Namespace = ""
		}
		out = append(out, cp)
		return nil
	}
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var head struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		switch head.Kind {
		case kindCNP, kindCCNP:
			if err := add(doc, i); err != nil {
				return nil, err
			}
		case "List", "CiliumNetworkPolicyList", "CiliumClusterwideNetworkPolicyList":
			for _, item := range head.Items {
				var k struct {
					Kind string `json:"kind"`
				}
				if err := json.Unmarshal(item, &k); err != nil {
					return nil, fmt.Errorf("document %d: %w", i, err)
				}
				if k.Kind == "" && head.Kind != "List" {
					k.Kind = head.Kind[:len(head.Kind)-len("List")]
					var m map[string]any
					if err := json.Unmarshal(item, &m); err != nil {
						return nil, fmt.Errorf("document %d: %w", i, err)
					}
					m["kind"] = k.Kind
					item, _ = json.Marshal(m)
				}
				if k.Kind == kindCNP || k.Kind == kindCCNP {
					if err := add(item, i); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return out, nil
}

// LoadCiliumDir reads every CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy in the YAML files under dir (or the file
// dir), sorted by Key.
func LoadCiliumDir(dir string) ([]CiliumNetworkPolicy, error) {
	out, err := parseYAMLDir(dir, ParseCiliumPolicies)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}
