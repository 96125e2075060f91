package schema

// NamespaceCoverage is the share of a namespace's inbound mesh requests
// (those an Envoy sidecar logged on the inbound side) that mutual TLS
// secured: Linkerd's SECURED column. analyze counts it; the page and the
// report show it.
type NamespaceCoverage struct {
	Namespace string  `json:"namespace"`
	Secured   uint64  `json:"secured"`
	Total     uint64  `json:"total"`
	Ratio     float64 `json:"ratio"`
}

// MeshNamespace is a namespace's mTLS coverage over a report's window,
// with the PeerAuthentication in force and the workloads that received
// plaintext: what a reviewer fixes.
type MeshNamespace struct {
	NamespaceCoverage
	// PeerAuthentication is the namespace's mode in force (STRICT,
	// PERMISSIVE, DISABLE, or "none": no PeerAuthentication applies, which
	// Istio takes as PERMISSIVE); empty when no policies were given.
	PeerAuthentication string `json:"peer_authentication,omitempty"`
	// PeerAuthenticationFrom names the policy that sets it
	// (namespace/name; the root namespace's for the mesh-wide one).
	PeerAuthenticationFrom string `json:"peer_authentication_from,omitempty"`
	// Plaintext are the receivers of plaintext requests, most first (the
	// top few); PlaintextReceivers counts them all.
	Plaintext          []PlaintextReceiver `json:"plaintext_receivers"`
	PlaintextReceivers int                 `json:"plaintext_receivers_total"`
}

// PlaintextReceiver is a workload's port that received inbound mesh
// requests without mutual TLS.
type PlaintextReceiver struct {
	Workload string `json:"workload"` // namespace/name
	Port     uint16 `json:"port"`
	Requests uint64 `json:"requests"`
	// Mode is the workload port's mode in force (STRICT: Istio refuses
	// these requests, or will once the policy is applied); empty when no
	// policies were given.
	Mode string `json:"mode,omitempty"`
}
