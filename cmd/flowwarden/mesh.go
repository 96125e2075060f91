package main

import (
	"context"
	"fmt"
	"time"

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
	rc, err := kubeapi.Config(g.kubeconfig)
	if err == nil {
		var client *dynamic.DynamicClient
		if client, err = dynamic.NewForConfig(rc); err == nil {
			cfg.PlaintextInMesh.PeerAuthentications, err = analyze.ListPeerAuthentications(ctx, client)
		}
	}
	if err != nil {
		g.log.Warn("PeerAuthentications in force: listing failed; only --strict-mtls-namespace namespaces are strict", "err", err)
		return cfg, nil
	}
	g.log.Info("PeerAuthentications in force read from the cluster", "server", rc.Host, "policies", len(cfg.PlaintextInMesh.PeerAuthentications))
	return cfg, nil
}

// refreshPeerAuthentications lists the PeerAuthentications in force from
// the cluster every interval and hands them to the detectors, until ctx
// ends. A failed listing keeps the last ones.
func refreshPeerAuthentications(ctx context.Context, g *globals, eng *analyze.Engine, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rc, err := kubeapi.Config(g.kubeconfig)
		if err == nil {
			var client *dynamic.DynamicClient
			if client, err = dynamic.NewForConfig(rc); err == nil {
				var pas []analyze.PeerAuthentication
				if pas, err = analyze.ListPeerAuthentications(ctx, client); err == nil {
					eng.SetPeerAuthentications(pas)
					continue
				}
			}
		}
		g.log.Warn("PeerAuthentications in force: listing failed; keeping the last ones", "err", err)
	}
}
