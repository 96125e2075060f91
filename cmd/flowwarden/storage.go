package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// storageConfig is where the global flags say the store is. readOnly: the
// commands that only read the store (query, detect/recommend/verify/report
// --since) refuse a data dir or database without flowwarden's database and
// create or migrate nothing.
func storageConfig(g *globals, readOnly bool) (clickhouse.StorageConfig, error) {
	cfg := clickhouse.StorageConfig{DSN: g.clickhouse, DataDir: g.dataDir, Existing: readOnly,
		Schema: clickhouse.SchemaConfig{FlowsTTL: g.flowsTTL, RollupTTL: g.rollupTTL, ApplyFlowsTTL: g.flowsTTLGiven, ApplyRollupTTL: g.rollupTTLGiven}}
	if g.cluster == "" {
		return cfg, nil
	}
	switch g.clusterDDL {
	case "on-cluster":
	case "each-host":
		cfg.Schema.EachHost = true
	default:
		return cfg, fmt.Errorf("--clickhouse-cluster-ddl %q: want on-cluster or each-host", g.clusterDDL)
	}
	cfg.Schema.Cluster, cfg.Schema.Replicated = g.cluster, g.replicated
	return cfg, nil
}

// openStorage opens the store the flags name (clickhouse.OpenStorage),
// creating or migrating it when readOnly is false.
func openStorage(ctx context.Context, g *globals, readOnly bool) (*clickhouse.Storage, error) {
	cfg, err := storageConfig(g, readOnly)
	if err != nil {
		return nil, err
	}
	return clickhouse.OpenStorage(ctx, cfg, g.log)
}

// newEmbeddedCommand runs the embedded ClickHouse in the foreground, for
// operators who want to query it with other tools.
func newEmbeddedCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "embedded-clickhouse",
		Short:  "Run the embedded ClickHouse in the foreground",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := embedded.New(embedded.Config{DataDir: g.dataDir}, g.log)
			if err != nil {
				return err
			}
			if err := srv.Start(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "native %s  http %s  users %s, %s (passwords in %s)\n", srv.NativeAddr(), srv.HTTPAddr(),
				embedded.AdminUser, embedded.ReaderUser, embedded.CredentialsFile(g.dataDir))
			return srv.Run(cmd.Context())
		},
	}
}
