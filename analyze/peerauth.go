package analyze

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// PeerAuthentication is the part of an Istio PeerAuthentication
// (security.istio.io) that decides whether a workload requires mutual TLS.
type PeerAuthentication struct {
	Namespace string
	Name      string
	// Selector is spec.selector.matchLabels; nil for a namespace-wide
	// policy (mesh-wide in the root namespace).
	Selector map[string]string
	// Mode is spec.mtls.mode: STRICT, PERMISSIVE, DISABLE or UNSET ("").
	Mode string
	// PortModes is spec.portLevelMtls: workload port → mode.
	PortModes map[uint16]string
}

// peerAuthDoc is a PeerAuthentication as YAML or JSON holds it.
type peerAuthDoc struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector *struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		MTLS *struct {
			Mode string `json:"mode"`
		} `json:"mtls"`
		PortLevelMTLS map[string]struct {
			Mode string `json:"mode"`
		} `json:"portLevelMtls"`
	} `json:"spec"`
}

func (d *peerAuthDoc) convert() (PeerAuthentication, error) {
	pa := PeerAuthentication{Namespace: d.Metadata.Namespace, Name: d.Metadata.Name}
	if pa.Namespace == "" {
		pa.Namespace = "default"
	}
	if d.Spec.Selector != nil {
		pa.Selector = d.Spec.Selector.MatchLabels
		if pa.Selector == nil {
			pa.Selector = map[string]string{}
		}
	}
	if d.Spec.MTLS != nil {
		pa.Mode = strings.ToUpper(d.Spec.MTLS.Mode)
	}
	for p, m := range d.Spec.PortLevelMTLS {
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			return pa, fmt.Errorf("PeerAuthentication %s/%s: portLevelMtls port %q is not a port number", pa.Namespace, pa.Name, p)
		}
		if pa.PortModes == nil {
			pa.PortModes = map[uint16]string{}
		}
		pa.PortModes[uint16(port)] = strings.ToUpper(m.Mode)
	}
	for _, m := range append([]string{pa.Mode}, portModes(pa.PortModes)...) {
		switch m {
		case "", "UNSET", "STRICT", "PERMISSIVE", "DISABLE":
		default:
			return pa, fmt.Errorf("PeerAuthentication %s/%s: unknown mTLS mode %q", pa.Namespace, pa.Name, m)
		}
	}
	return pa, nil
}

func portModes(m map[uint16]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ReadPeerAuthentications reads every PeerAuthentication in the YAML or
// JSON files of dir (other kinds, such as the NetworkPolicies next to
// them, are skipped).
func ReadPeerAuthentications(dir string) ([]PeerAuthentication, error) {
	var out []PeerAuthentication
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
				// Not a Kubernetes object: recommend's
				// flowwarden-left-out.json (a list) lies next to policies.
				continue
			}
			var doc peerAuthDoc
			if err := json.Unmarshal(raw, &doc); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if doc.Kind != "PeerAuthentication" || !strings.HasPrefix(doc.APIVersion, "security.istio.io/") {
				continue
			}
			pa, err := doc.convert()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, pa)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read PeerAuthentications: %w", err)
	}
	return out, nil
}

// peerAuthResources are the versions Istio serves PeerAuthentication at,
// newest first.
var peerAuthResources = []k8sschema.GroupVersionResource{
	{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"},
	{Group: "security.istio.io", Version: "v1beta1", Resource: "peerauthentications"},
}

// ListPeerAuthentications lists the PeerAuthentications of every namespace
// from the API server, page by page. A cluster without Istio's CRD has none.
func ListPeerAuthentications(ctx context.Context, client dynamic.Interface) ([]PeerAuthentication, error) {
	var lastErr error
	for _, gvr := range peerAuthResources {
		var out []PeerAuthentication
		opts := metav1.ListOptions{Limit: 500}
		for {
			page, err := client.Resource(gvr).Namespace(metav1.NamespaceAll).List(ctx, opts)
			if err != nil {
				lastErr = err
				break
			}
			for _, item := range page.Items {
				raw, err := item.MarshalJSON()
				if err != nil {
					return nil, err
				}
				var doc peerAuthDoc
				if err := yaml.Unmarshal(raw, &doc); err != nil {
					return nil, fmt.Errorf("PeerAuthentication %s/%s: %w", item.GetNamespace(), item.GetName(), err)
				}
				pa, err := doc.convert()
				if err != nil {
					return nil, err
				}
				out = append(out, pa)
			}
			if page.GetContinue() == "" {
				return out, nil
			}
			opts.Continue = page.GetContinue()
		}
	}
	return nil, fmt.Errorf("list PeerAuthentications (security.istio.io): %w", lastErr)
}

// MTLSPolicy answers whether a workload's port requires mutual TLS, as
// Istio resolves PeerAuthentications: a workload's own (port level first),
// then its namespace's, then the mesh's in the root namespace; UNSET
// inherits; nothing at all is PERMISSIVE. Namespaces named as strict (a
// flag) are strict whatever the policies say.
type MTLSPolicy struct {
	root     string
	byNS     map[string][]PeerAuthentication
	strictNS map[string]bool
}

// NewMTLSPolicy indexes the policies. rootNamespace is Istio's root
// namespace (istio-system).
func NewMTLSPolicy(pas []PeerAuthentication, rootNamespace string, strictNamespaces []string) *MTLSPolicy {
	p := &MTLSPolicy{root: rootNamespace, byNS: map[string][]PeerAuthentication{}, strictNS: map[string]bool{}}
	for _, pa := range pas {
		p.byNS[pa.Namespace] = append(p.byNS[pa.Namespace], pa)
	}
	for _, l := range p.byNS {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	for _, ns := range strictNamespaces {
		p.strictNS[ns] = true
	}
	return p
}

// Empty reports whether nothing can be strict.
func (p *MTLSPolicy) Empty() bool {
	return p == nil || len(p.strictNS) == 0 && len(p.byNS) == 0
}

// Mode is the effective mode for a workload's port.
func (p *MTLSPolicy) Mode(ns string, labels map[string]string, port uint16) string {
	set := func(m string) bool { return m != "" && m != "UNSET" }
	for _, pa := range p.byNS[ns] {
		if pa.Selector == nil || !selects(pa.Selector, labels) {
			continue
		}
		if m, ok := pa.PortModes[port]; ok && set(m) {
			return m
		}
		if set(pa.Mode) {
			return pa.Mode
		}
		break // the first matching workload policy decides; UNSET inherits
	}
	for _, scope := range []string{ns, p.root} {
		for _, pa := range p.byNS[scope] {
			if pa.Selector == nil && set(pa.Mode) {
				return pa.Mode
			}
		}
	}
	return "PERMISSIVE"
}

// Strict reports whether plaintext to the workload's port breaks the policy.
func (p *MTLSPolicy) Strict(ns string, labels map[string]string, port uint16) bool {
	if p == nil {
		return false
	}
	return p.strictNS[ns] || p.Mode(ns, labels, port) == "STRICT"
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// NamespaceMode is the mode a namespace's workloads get from the policies
// that cover the whole namespace: its own namespace-wide PeerAuthentication,
// else the mesh's (root namespace), as Mode resolves them; "none" when
// neither sets one (Istio then takes PERMISSIVE). from names the policy
// (namespace/name), or the flag for a namespace named strict.
func (p *MTLSPolicy) NamespaceMode(ns string) (mode, from string) {
	if p == nil {
		return "none", ""
	}
	if p.strictNS[ns] {
		return "STRICT", "--strict-mtls-namespace"
	}
	for _, scope := range []string{ns, p.root} {
		for _, pa := range p.byNS[scope] {
			if pa.Selector == nil && pa.Mode != "" && pa.Mode != "UNSET" {
				return pa.Mode, pa.Namespace + "/" + pa.Name
			}
		}
	}
	return "none", ""
}
