package main

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
)

// detectorConfig is the detectors' configuration with what plaintext-in-mesh
// needs: the PeerAuthentications in force (from the directory or the
// cluster named by --current-policies) and the namespaces named strict.
// From the cluster, a failed listing (no Istio, no permission) is logged and
// the flag's namespaces alone are strict.
func detectorConfig(ctx context.Context, g *globals, current string, strict []string) (analyze.Config, error) {
	cfg := analyze.DefaultConfig()
	cfg.PlaintextInMesh.StrictNamespaces = strict
	if current == "" {
		return cfg, nil
	}
	if current != fromCluster {
		pas, err := analyze.ReadPeerAuthentications(current)
		if err != nil {
			return cfg, fmt.Errorf("--current-policies: %w", err)
		}
		cfg.PlaintextInMesh.PeerAuthentications = pas
		return cfg, nil
	}
	pas, server, err := listPeerAuthentications(ctx, g)
	if err != nil {
		g.log.Warn("PeerAuthentications in force: listing failed; only --strict-mtls-namespace namespaces are strict", "err", err)
		return cfg, nil
	}
	cfg.PlaintextInMesh.PeerAuthentications = pas
	g.log.Info("PeerAuthentications in force read from the cluster", "server", server, "policies", len(pas))
	return cfg, nil
}

// listPeerAuthentications lists the PeerAuthentications in force from the
// API server (kubeconfig or the pod's ServiceAccount), and names the server.
func listPeerAuthentications(ctx context.Context, g *globals) ([]analyze.PeerAuthentication, string, error) {
	rc, err := kubeapi.Config(g.kubeconfig)
	if err != nil {
		return nil, "", err
	}
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, rc.Host, err
	}
	pas, err := analyze.ListPeerAuthentications(ctx, client)
	return pas, rc.Host, err
}

// refreshPeerAuthentications lists the PeerAuthentications in force from
// the cluster every interval and hands them to the detectors, until ctx
// ends. A failed listing keeps the last ones.
func refreshPeerAuthentications(ctx context.Context, g *globals, eng *analyze.Engine, every time.Duration) {
	refreshEvery(ctx, g, every, "PeerAuthentications in force: listing failed; keeping the last ones", func(ctx context.Context) error {
		pas, _, err := listPeerAuthentications(ctx, g)
		if err == nil {
			eng.SetPeerAuthentications(pas)
		}
		return err
	})
}

// refreshEvery calls refresh every interval until ctx ends; a failure is
// logged with warning and changes nothing (refresh applies only what it
// listed successfully).
func refreshEvery(ctx context.Context, g *globals, every time.Duration, warning string, refresh func(context.Context) error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := refresh(ctx); err != nil {
			g.log.Warn(warning, "err", err)
		}
	}
}

// plaintextReceiversShown is how many plaintext receivers the report lists
// per namespace (the rest are counted).
const plaintextReceiversShown = 5

// meshPolicyOf is the PeerAuthentications in force the report judges mTLS
// modes by: from the --policies directory or file, or the cluster (a failed
// listing is logged and the modes left out); nil when none can be read
// (no --policies, or stdin, already read for the NetworkPolicies).
func meshPolicyOf(ctx context.Context, g *globals, policies string) (*analyze.MTLSPolicy, error) {
	root := analyze.DefaultConfig().PlaintextInMesh.RootNamespace
	switch policies {
	case "", "-":
		return nil, nil
	case fromCluster:
		pas, server, err := listPeerAuthentications(ctx, g)
		switch {
		case apierrors.IsNotFound(err):
			// Istio's CRD is not installed: no PeerAuthentication applies.
			g.log.Info("PeerAuthentications: the API server has no such resource (Istio's CRDs are not installed)", "server", server)
		case err != nil:
			g.log.Warn("PeerAuthentications in force: listing failed; the report's mTLS coverage shows no modes", "err", err)
			return nil, nil
		}
		return analyze.NewMTLSPolicy(pas, root, nil), nil
	}
	pas, err := analyze.ReadPeerAuthentications(policies)
	if err != nil {
		return nil, err
	}
	return analyze.NewMTLSPolicy(pas, root, nil), nil
}
