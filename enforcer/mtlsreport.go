package enforcer

import (
	"fmt"
	"io"
	"strings"

	"github.com/flowwarden/flowwarden/schema"
)

// MTLSReport is the report's mTLS coverage section: per namespace that
// received inbound mesh requests (Envoy/Istio sidecars' inbound access-log
// lines) over the window, the share mutual TLS secured, the
// PeerAuthentication in force and the workloads that received plaintext.
type MTLSReport struct {
	// Requests and Secured sum the namespaces'.
	Requests uint64  `json:"requests"`
	Secured  uint64  `json:"secured"`
	Ratio    float64 `json:"ratio"`
	// PoliciesGiven says whether the PeerAuthentications in force were
	// read (report --policies): the modes are set only then.
	PoliciesGiven bool                   `json:"policies_given"`
	Namespaces    []schema.MeshNamespace `json:"namespaces"`
	// WithoutMeshTraffic are the report's namespaces that received no
	// inbound mesh request: left out of Namespaces.
	WithoutMeshTraffic []string `json:"without_mesh_traffic"`
}

// mtlsReport assembles the section from the namespaces' coverage and the
// report's namespaces.
func mtlsReport(mesh []schema.MeshNamespace, policiesGiven bool, namespaces []NamespaceReport) *MTLSReport {
	m := &MTLSReport{PoliciesGiven: policiesGiven, Namespaces: mesh, WithoutMeshTraffic: []string{}}
	if m.Namespaces == nil {
		m.Namespaces = []schema.MeshNamespace{}
	}
	seen := map[string]bool{}
	for _, n := range mesh {
		m.Requests += n.Total
		m.Secured += n.Secured
		seen[n.Namespace] = true
	}
	if m.Requests > 0 {
		m.Ratio = float64(m.Secured) / float64(m.Requests)
	}
	for _, n := range namespaces {
		if n.Name != orOutside("") && !seen[n.Name] {
			m.WithoutMeshTraffic = append(m.WithoutMeshTraffic, n.Name)
		}
	}
	return m
}

// Percent renders a ratio as a percentage, never rounding a share below
// 100% up to it.
func Percent(ratio float64) string {
	s := fmt.Sprintf("%.1f%%", ratio*100)
	if s == "100.0%" && ratio < 1 {
		return "99.9%"
	}
	return s
}

// PlaintextLine lists a namespace's plaintext receivers with their counts
// (and mode in force), and how many more there are.
func PlaintextLine(n schema.MeshNamespace) string {
	if n.PlaintextReceivers == 0 {
		return "none"
	}
	var parts []string
	for _, p := range n.Plaintext {
		s := fmt.Sprintf("%s:%d (%d)", p.Workload, p.Port, p.Requests)
		if p.Mode == "STRICT" {
			s += " STRICT"
		}
		parts = append(parts, s)
	}
	if more := n.PlaintextReceivers - len(n.Plaintext); more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(parts, ", ")
}

// modeWords is a namespace's PeerAuthentication in force for a table cell.
func modeWords(n schema.MeshNamespace) string {
	if n.PeerAuthenticationFrom == "" {
		return n.PeerAuthentication
	}
	return n.PeerAuthentication + " (" + n.PeerAuthenticationFrom + ")"
}

func (m *MTLSReport) writeMarkdown(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## mTLS coverage\n\n")
	if len(m.Namespaces) == 0 {
		p("No mesh traffic was seen: no inbound request logged by an Envoy/Istio sidecar in the window, so mTLS coverage cannot be judged.\n\n")
		return
	}
	p("Inbound mesh requests (logged by the receiving Envoy/Istio sidecar) secured by mutual TLS: **%s** of %d.", Percent(m.Ratio), m.Requests)
	if !m.PoliciesGiven {
		p(" No policies were given (`--policies`), so the PeerAuthentications in force are not shown.")
	}
	p("\n\n")
	if m.PoliciesGiven {
		p("| namespace | requests | secured by mTLS | PeerAuthentication | plaintext received by (requests) |\n|---|---|---|---|---|\n")
	} else {
		p("| namespace | requests | secured by mTLS | plaintext received by (requests) |\n|---|---|---|---|\n")
	}
	for _, n := range m.Namespaces {
		if m.PoliciesGiven {
			p("| %s | %d | %s | %s | %s |\n", n.Namespace, n.Total, Percent(n.Ratio), modeWords(n), PlaintextLine(n))
		} else {
			p("| %s | %d | %s | %s |\n", n.Namespace, n.Total, Percent(n.Ratio), PlaintextLine(n))
		}
	}
	p("\n")
	if len(m.WithoutMeshTraffic) > 0 {
		p("Left out, no inbound mesh requests seen: %s.\n\n", strings.Join(m.WithoutMeshTraffic, ", "))
	}
}
