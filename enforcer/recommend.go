package enforcer

import "fmt"

// ProofError reports generated policies that would judge observed edges
// wrongly (a bug of the generator): nothing may be written.
type ProofError struct {
	Violations []Violation
}

func (e *ProofError) Error() string {
	return fmt.Sprintf("%d observed edges would be judged wrongly by the generated policies: not written (a bug; please report it)", len(e.Violations))
}

// Recommend is the recommendation pipeline `recommend`, `enforce` and the
// page share: generate the policies for the observed graph with cfg, then
// prove them against every observed edge; a policy set that would judge
// an edge wrongly is refused with a *ProofError.
func Recommend(g *Graph, cfg Config) (*Result, error) {
	res, err := Generate(g, cfg)
	if err != nil {
		return nil, err
	}
	violations, err := Prove(g, res)
	if err != nil {
		return nil, err
	}
	if len(violations) > 0 {
		return nil, &ProofError{Violations: violations}
	}
	return res, nil
}
