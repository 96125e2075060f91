package enforcer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// L7ProofError reports generated layer-7 rules that would judge observed
// requests wrongly (a bug of the generator): nothing may be written.
type L7ProofError struct {
	// Kind names the rules: "L7" (Cilium HTTP and DNS rules) or "Istio"
	// (AuthorizationPolicies).
	Kind     string
	Problems []string
}

func (e *L7ProofError) Error() string {
	return fmt.Sprintf("%d %s checks failed: not written (a bug; please report it)", len(e.Problems), e.Kind)
}

// RecommendCiliumL7 is the layer-7 step of recommend --flavor cilium --l7:
// it adds the HTTP and DNS rules to cps (AddCiliumL7), then proves them
// against the observed requests; rules that would judge one wrongly are
// refused with an *L7ProofError. The notes say what each port got, once
// per port (two rules of a policy on one port, for other peers, get the
// same note).
func RecommendCiliumL7(cps []CiliumPolicy, obs *L7Observations, cfg L7Config, namePrefix string) ([]L7Note, error) {
	notes := AddCiliumL7(cps, obs, cfg, namePrefix)
	if bad := ProveCiliumL7(cps, obs, namePrefix); len(bad) > 0 {
		return nil, &L7ProofError{Kind: "L7", Problems: bad}
	}
	return slices.Compact(notes), nil
}

// IstioRecommendation is what recommend --flavor istio writes: one ALLOW
// AuthorizationPolicy per workload, proven against the inbound requests,
// and, per namespace, whether STRICT mutual TLS would break observed
// traffic.
type IstioRecommendation struct {
	Policies []AuthorizationPolicy
	// Skipped are the workloads without one: their pods' stable labels are
	// unknown (an empty selector would cover the whole namespace).
	Skipped []string
	// Requests counts the distinct inbound requests observed.
	Requests  int
	Readiness []MTLSReadiness
	// HeldBack are the observed requests left out as evidence of the
	// findings of L7Config.Flagged (proven denied), by request.
	HeldBack []IstioHeldBack
	// NotHeld are requests that are evidence of findings but that the
	// policies cannot deny: their source (a principal, namespace or
	// address) asks the same operation as requests that stay allowed (an
	// AuthorizationPolicy tells callers apart by those only), or their
	// workload gets no policy (Skipped). They stay allowed.
	NotHeld []IstioHeldBack
	// UnknownDetectors are the findings' detectors without a rule here:
	// their findings held back nothing.
	UnknownDetectors []string
}

// ErrNoIstioRequests is RecommendIstio's answer to observations without
// an inbound request to a known workload.
var ErrNoIstioRequests = errors.New("no inbound HTTP requests from Istio/Envoy access logs with a known destination workload: ingest the sidecars' logs (serve --envoy-file) with Hubble's identities")

// RecommendIstio generates the AuthorizationPolicies for the observed
// inbound requests and proves them; policies that would judge an observed
// request wrongly are refused with an *L7ProofError. The requests that are
// evidence of a finding of cfg.Flagged (IstioHoldBackRule) are held back:
// left out, and proven denied.
func RecommendIstio(obs *IstioObservations, cfg L7Config, namePrefix string) (*IstioRecommendation, error) {
	if len(obs.Requests) == 0 {
		return nil, ErrNoIstioRequests
	}
	held, unknown := obs.istioHeldBack(cfg.Flagged)
	aps, skipped := obs.IstioPolicies(cfg, namePrefix, held)
	notHeld := map[IstioRequest][]Flag{}
	for r, flags := range held {
		ns, _, _ := strings.Cut(r.Workload, "/")
		if len(obs.labels[r.Workload]) == 0 {
			notHeld[r] = flags // no policy for the workload: nothing denies it
			continue
		}
		if ok, _ := IstioAllows(aps, ns, obs.labels[r.Workload], r); ok {
			notHeld[r] = flags
		}
	}
	if len(notHeld) > 0 {
		for r := range notHeld {
			delete(held, r)
		}
		aps, skipped = obs.IstioPolicies(cfg, namePrefix, held)
	}
	if bad := obs.ProveIstio(aps, held); len(bad) > 0 {
		return nil, &L7ProofError{Kind: "Istio", Problems: bad}
	}
	return &IstioRecommendation{Policies: aps, Skipped: skipped, Requests: len(obs.Requests), Readiness: obs.Readiness(held),
		HeldBack: obs.heldBackList(held), NotHeld: obs.heldBackList(notHeld), UnknownDetectors: unknown}, nil
}

// WriteDir writes <dir>/<namespace>/<workload>.authz.yaml for every policy
// and <dir>/<namespace>/peer-authentication.yaml (STRICT) for every
// namespace where nobody called in plaintext.
func (r *IstioRecommendation) WriteDir(dir, namePrefix string) error {
	write := func(ns, file string, obj any) error {
		b, err := MarshalIstio(obj)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, ns), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, ns, file), b, 0o644)
	}
	for _, ap := range r.Policies {
		ns, _ := ap.Metadata["namespace"].(string)
		name, _ := ap.Metadata["name"].(string)
		if err := write(ns, strings.TrimPrefix(name, namePrefix)+".authz.yaml", ap); err != nil {
			return err
		}
	}
	for _, m := range r.Readiness {
		if m.Ready() {
			if err := write(m.Namespace, "peer-authentication.yaml", StrictPeerAuthentication(m.Namespace)); err != nil {
				return err
			}
		}
	}
	return nil
}

// PlaintextCallers lists who called into the namespace in plaintext, with
// their requests, in order: "caller (n)".
func (m MTLSReadiness) PlaintextCallers() []string {
	callers := make([]string, 0, len(m.Plaintext))
	for c, n := range m.Plaintext {
		callers = append(callers, fmt.Sprintf("%s (%d)", c, n))
	}
	slices.Sort(callers)
	return callers
}

// WriteCiliumDir writes CiliumNetworkPolicies as
// <dir>/<namespace>/<workload>.yaml and returns those paths, relative to
// dir, in the order of cps.
func WriteCiliumDir(dir string, cps []CiliumPolicy, namePrefix string) ([]string, error) {
	var paths []string
	for _, cp := range cps {
		b, err := MarshalCilium(cp)
		if err != nil {
			return nil, err
		}
		ns, _ := cp.Metadata["namespace"].(string)
		name, _ := cp.Metadata["name"].(string)
		rel := filepath.Join(ns, strings.TrimPrefix(name, namePrefix)+".yaml")
		if err := os.MkdirAll(filepath.Join(dir, ns), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, rel)
	}
	return paths, nil
}
