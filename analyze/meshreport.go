package analyze

import (
	"sort"

	"github.com/flowwarden/flowwarden/schema"
)

// MeshReport counts the inbound mesh requests of a window, per namespace
// (the coverage MTLSCoverageOf gives for the same flows) and, of those
// without mutual TLS, per receiving workload and port: the report's mTLS
// coverage section. The zero value is ready; it is not safe for
// concurrent use.
type MeshReport struct {
	coverage MTLSCoverage
	plain    map[plainKey]*plainReceiver
}

type plainKey struct {
	namespace, workload string
	port                uint16
}

type plainReceiver struct {
	requests uint64
	labels   map[string]string // the workload's, for its mode in force
}

// Add counts a flow.
func (r *MeshReport) Add(f *schema.Flow) { r.AddGroup(f, 1) }

// AddGroup counts n flows alike (a stored group of like flows).
func (r *MeshReport) AddGroup(f *schema.Flow, n uint64) {
	if !inboundMeshRequest(f) || n == 0 {
		return
	}
	r.coverage.observeN(f, n)
	if f.MTLS {
		return
	}
	if r.plain == nil {
		r.plain = map[plainKey]*plainReceiver{}
	}
	k := plainKey{f.Dst.Namespace, f.Dst.Workload, f.DstPort}
	if k.workload == "" {
		k.workload = f.Dst.Pod
	}
	p := r.plain[k]
	if p == nil {
		p = &plainReceiver{labels: f.Dst.Labels}
		r.plain[k] = p
	}
	p.requests += n
}

// Namespaces returns every namespace that received inbound mesh requests,
// by name, with its top plaintext receivers (most requests first). With a
// policy (nil: no policies given) each namespace and receiver carries the
// mode in force.
func (r *MeshReport) Namespaces(policy *MTLSPolicy, top int) []schema.MeshNamespace {
	byNS := map[string][]schema.PlaintextReceiver{}
	for k, p := range r.plain {
		rc := schema.PlaintextReceiver{Workload: k.namespace + "/" + k.workload, Port: k.port, Requests: p.requests}
		if policy != nil {
			rc.Mode = policy.Mode(k.namespace, p.labels, k.port)
			if policy.Strict(k.namespace, p.labels, k.port) {
				rc.Mode = "STRICT"
			}
		}
		byNS[k.namespace] = append(byNS[k.namespace], rc)
	}
	var out []schema.MeshNamespace
	for _, c := range r.coverage.Namespaces() {
		m := schema.MeshNamespace{NamespaceCoverage: c, Plaintext: byNS[c.Namespace]}
		if policy != nil {
			m.PeerAuthentication, m.PeerAuthenticationFrom = policy.NamespaceMode(c.Namespace)
		}
		sort.Slice(m.Plaintext, func(i, j int) bool {
			a, b := m.Plaintext[i], m.Plaintext[j]
			if a.Requests != b.Requests {
				return a.Requests > b.Requests
			}
			if a.Workload != b.Workload {
				return a.Workload < b.Workload
			}
			return a.Port < b.Port
		})
		m.PlaintextReceivers = len(m.Plaintext)
		if top > 0 && len(m.Plaintext) > top {
			m.Plaintext = m.Plaintext[:top]
		}
		if m.Plaintext == nil {
			m.Plaintext = []schema.PlaintextReceiver{}
		}
		out = append(out, m)
	}
	return out
}
