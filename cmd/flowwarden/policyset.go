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
// them: NetworkPolicies, CiliumNetworkPolicies and
// CiliumClusterwideNetworkPolicies, and the layer-7 policies (Istio
// AuthorizationPolicies, the HTTP rules of CiliumNetworkPolicies), from a
// directory, a file, stdin or the cluster (listPolicySet).
func loadPolicySet(ctx context.Context, g *globals, spec string) ([]networkingv1.NetworkPolicy, []enforcer.CiliumNetworkPolicy, *enforcer.L7Policies, error) {
	switch spec {
	case "-":
		raw, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("policies from stdin: %w", err)
		}
		nps, err := enforcer.ParsePolicies(raw)
		if err != nil {
			return nil, nil, nil, err
		}
		cnps, err := enforcer.ParseCiliumPolicies(raw)
		if err != nil {
			return nil, nil, nil, err
		}
		l7 := &enforcer.L7Policies{}
		if err := enforcer.ParseL7Policies(raw, l7); err != nil {
			return nil, nil, nil, fmt.Errorf("stdin: %w", err)
		}
		return nps, cnps, l7, nil
	case fromCluster:
		return listPolicySet(ctx, g)
	}
	nps, err := enforcer.LoadDir(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	cnps, err := enforcer.LoadCiliumDir(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	l7, err := enforcer.LoadL7Dir(spec) // a directory or one file
	return nps, cnps, l7, err
}

// listPolicySet lists the policies in force from the API server: the
// NetworkPolicies, the Cilium policies where Cilium's CRDs are installed,
// and the AuthorizationPolicies where Istio's are (without them: not a
// Cilium, or not an Istio, cluster, said once in the log, no error).
func listPolicySet(ctx context.Context, g *globals) ([]networkingv1.NetworkPolicy, []enforcer.CiliumNetworkPolicy, *enforcer.L7Policies, error) {
	cfg, err := kubeapi.Config(g.kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	nps, err := kubeapi.ListPolicies(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	l7 := &enforcer.L7Policies{}
	cnps, missing, err := kubeapi.ListCiliumPoliciesL7(ctx, client, l7)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	if len(missing) > 0 {
		g.log.Info("Cilium policies: the API server has no such resource (Cilium's CRDs are not installed); not listed", "server", cfg.Host, "resources", missing)
	}
	noIstio, err := kubeapi.ListAuthorizationPolicies(ctx, client, l7)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	if noIstio {
		g.log.Info("AuthorizationPolicies: the API server has no such resource (Istio's CRDs are not installed); not listed", "server", cfg.Host, "resource", kubeapi.AuthorizationPolicies.GroupResource().String())
	}
	g.log.Info("policies in force read from the cluster", "server", cfg.Host, "policies", len(nps), "cilium_policies", len(cnps), "authorization_policies", len(l7.Istio))
	return nps, cnps, l7, nil
}
