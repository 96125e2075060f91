package main

import (
	"context"
	"fmt"
	"io"
	"os"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/enforcer"
)

// loadPolicySet reads the policies in force as verify and report judge
// them: NetworkPolicies, and CiliumNetworkPolicies and
// CiliumClusterwideNetworkPolicies from a directory, a file or stdin (from
// the cluster: NetworkPolicies only).
func loadPolicySet(ctx context.Context, g *globals, spec string) ([]networkingv1.NetworkPolicy, []enforcer.CiliumNetworkPolicy, error) {
	switch spec {
	case "-":
		raw, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, nil, fmt.Errorf("policies from stdin: %w", err)
		}
		nps, err := enforcer.ParsePolicies(raw)
		if err != nil {
			return nil, nil, err
		}
		cnps, err := enforcer.ParseCiliumPolicies(raw)
		return nps, cnps, err
	case fromCluster:
		nps, err := loadPolicies(ctx, g, spec)
		return nps, nil, err
	}
	nps, err := enforcer.LoadDir(spec)
	if err != nil {
		return nil, nil, err
	}
	cnps, err := enforcer.LoadCiliumDir(spec)
	return nps, cnps, err
}
