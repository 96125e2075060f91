package main

import (
	"context"
	"fmt"
	"io"
	"os"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/dynamic"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
)

// loadPolicySet reads the policies in force as verify and report judge
// them: NetworkPolicies, and CiliumNetworkPolicies and
// CiliumClusterwideNetworkPolicies, from a directory, a file, stdin or the
// cluster (listPolicySet).
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
		return listPolicySet(ctx, g)
	}
	nps, err := enforcer.LoadDir(spec)
	if err != nil {
		return nil, nil, err
	}
	cnps, err := enforcer.LoadCiliumDir(spec)
	return nps, cnps, err
}

// listPolicySet lists the policies in force from the API server: the
// NetworkPolicies, and the Cilium policies where Cilium's CRDs are installed
// (without them: not a Cilium cluster, said once in the log, no error).
func listPolicySet(ctx context.Context, g *globals) ([]networkingv1.NetworkPolicy, []enforcer.CiliumNetworkPolicy, error) {
	cfg, err := kubeapi.Config(g.kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	nps, err := kubeapi.ListPolicies(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	cnps, missing, err := kubeapi.ListCiliumPolicies(ctx, client)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	if len(missing) > 0 {
		g.log.Info("Cilium policies: the API server has no such resource (Cilium's CRDs are not installed); not listed", "server", cfg.Host, "resources", missing)
	}
	g.log.Info("policies in force read from the cluster", "server", cfg.Host, "policies", len(nps), "cilium_policies", len(cnps))
	return nps, cnps, nil
}
