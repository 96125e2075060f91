package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// storage is an open, migrated ClickHouse, and the embedded server behind it
// when this process started one.
type storage struct {
	conn   driver.Conn
	server *embedded.Server
	dsn    string
	// readerDSN can only read: the embedded server's read-only user, or
	// --clickhouse itself (clickhouse.Query then sets readonly=1).
	readerDSN string
}

// openReader connects with readerDSN, for query and the other read paths.
func (st *storage) openReader(ctx context.Context) (driver.Conn, error) {
	return clickhouse.OpenReader(ctx, st.readerDSN)
}

// openStorage connects to --clickhouse, or to the embedded server another
// flowwarden runs on --data-dir, or starts one, and creates or migrates the
// schema. The caller must call close; when server is non-nil it should also
// supervise it (server.Run).
func openStorage(ctx context.Context, g *globals) (*storage, error) {
	return openStorageFor(ctx, g, true)
}

// openStored is openStorage for the commands that only read the store
// (query, detect/recommend/verify/report --since): a data dir or database
// that holds no flowwarden database is refused, naming it, and nothing is
// created or migrated.
func openStored(ctx context.Context, g *globals) (*storage, error) {
	return openStorageFor(ctx, g, false)
}

func openStorageFor(ctx context.Context, g *globals, write bool) (*storage, error) {
	st := &storage{dsn: g.clickhouse}
	cfg := clickhouse.SchemaConfig{FlowsTTL: g.flowsTTL, RollupTTL: g.rollupTTL, ApplyFlowsTTL: g.flowsTTLGiven, ApplyRollupTTL: g.rollupTTLGiven}
	if g.cluster != "" {
		if st.dsn == "" {
			return nil, errors.New("--clickhouse-cluster needs --clickhouse: the embedded ClickHouse is a single server")
		}
		switch g.clusterDDL {
		case "on-cluster":
		case "each-host":
			cfg.EachHost = true
		default:
			return nil, fmt.Errorf("--clickhouse-cluster-ddl %q: want on-cluster or each-host", g.clusterDDL)
		}
		cfg.Cluster, cfg.Replicated = g.cluster, g.replicated
	}
	if st.dsn == "" {
		if r, err := embedded.FindRunning(g.dataDir); err == nil {
			st.dsn, st.readerDSN = r.DSN(clickhouse.DefaultDatabase), r.ReaderDSN(clickhouse.DefaultDatabase)
			g.log.Debug("using the embedded ClickHouse of a running flowwarden", "pid", r.PID, "addr", r.Native)
		} else {
			if !write {
				// The embedded server keeps its files in <data-dir>/clickhouse:
				// without them there is nothing to read, and starting one
				// would create them.
				if _, err := os.Stat(filepath.Join(g.dataDir, "clickhouse")); err != nil {
					return nil, noDatabase(g)
				}
			}
			srv, err := embedded.New(embedded.Config{DataDir: g.dataDir}, g.log)
			if err != nil {
				return nil, fmt.Errorf("embedded ClickHouse (or pass --clickhouse): %w", err)
			}
			if err := srv.Start(ctx); err != nil {
				return nil, err
			}
			st.server = srv
			st.dsn, st.readerDSN = srv.DSN(clickhouse.DefaultDatabase), srv.ReaderDSN(clickhouse.DefaultDatabase)
		}
	} else {
		st.readerDSN = st.dsn
	}
	if !write {
		conn, err := clickhouse.OpenExisting(ctx, st.dsn)
		if errors.Is(err, clickhouse.ErrNoDatabase) {
			err = noDatabase(g)
		}
		if err != nil {
			st.close()
			return nil, err
		}
		st.conn = conn
		if cfg.Cluster != "" {
			if err := clickhouse.CheckCluster(ctx, conn, cfg.Cluster); err != nil {
				st.close()
				return nil, fmt.Errorf("--clickhouse-cluster: %w", err)
			}
		}
		return st, nil
	}
	conn, err := clickhouse.Open(ctx, st.dsn)
	if err != nil {
		st.close()
		return nil, err
	}
	st.conn = conn
	migrate := clickhouse.Migrate
	if cfg.EachHost {
		migrate = func(ctx context.Context, conn driver.Conn, cfg clickhouse.SchemaConfig, log *slog.Logger) error {
			return clickhouse.MigrateEachHost(ctx, conn, st.dsn, cfg, log)
		}
	}
	if err := migrate(ctx, conn, cfg, g.log); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

// noDatabase names where no flowwarden database was found.
func noDatabase(g *globals) error {
	if g.clickhouse != "" {
		return fmt.Errorf("--clickhouse %s: no flowwarden database there (ingest or serve create one)", clickhouse.RedactDSN(g.clickhouse))
	}
	abs, err := filepath.Abs(g.dataDir)
	if err != nil {
		abs = g.dataDir
	}
	return fmt.Errorf("--data-dir %s holds no flowwarden database (ingest or serve create one there; or give --clickhouse)", abs)
}

func (st *storage) close() {
	if st.conn != nil {
		st.conn.Close()
	}
	if st.server != nil {
		st.server.Stop()
	}
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
