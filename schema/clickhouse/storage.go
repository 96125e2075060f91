package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

// StorageConfig says where flowwarden's store is and how to open it.
type StorageConfig struct {
	// DSN names a ClickHouse server (--clickhouse). Empty: the embedded
	// ClickHouse under DataDir, the one another flowwarden runs there or
	// else one this process starts.
	DSN string
	// DataDir holds the embedded ClickHouse's files (DataDir/clickhouse),
	// its credentials and the address of a running one.
	DataDir string
	// Schema is what Migrate creates or changes (retention, cluster
	// layout). A cluster needs DSN: the embedded ClickHouse is one server.
	Schema SchemaConfig
	// Existing opens a store that must already hold flowwarden's database,
	// for the commands that only read it: nothing is created or migrated,
	// and a data dir or server without one is refused (ErrNoDatabase)
	// naming it.
	Existing bool
}

// Storage is an open flowwarden store: a connection to its database, and
// the embedded server behind it when this process started one.
type Storage struct {
	// Conn is the admin connection (writes, migrations, findings).
	Conn driver.Conn
	// DSN is Conn's DSN (the writer opens its own connections with it).
	DSN string
	// Server is the embedded ClickHouse this process started, nil when it
	// talks to --clickhouse or to another flowwarden's server. The caller
	// supervises it (Server.Run); Close stops it.
	Server *embedded.Server
	// readerDSN can only read: the embedded server's read-only user, or
	// the external DSN itself (Query then sets readonly=1).
	readerDSN string
}

// OpenReader connects with the store's read-only login, for query and the
// other read paths.
func (s *Storage) OpenReader(ctx context.Context) (driver.Conn, error) {
	return OpenReader(ctx, s.readerDSN)
}

// Close closes Conn and stops the embedded server this process started.
func (s *Storage) Close() {
	if s.Conn != nil {
		s.Conn.Close()
	}
	if s.Server != nil {
		s.Server.Stop()
	}
}

// OpenStorage connects to cfg.DSN, or to the embedded server another
// flowwarden runs on cfg.DataDir, or starts one there; then, unless
// cfg.Existing, it creates or migrates the schema. The caller must Close
// the result and, when Server is non-nil, supervise it (Server.Run).
func OpenStorage(ctx context.Context, cfg StorageConfig, log *slog.Logger) (*Storage, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Schema.Cluster != "" && cfg.DSN == "" {
		return nil, errors.New("--clickhouse-cluster needs --clickhouse: the embedded ClickHouse is a single server")
	}
	st := &Storage{DSN: cfg.DSN, readerDSN: cfg.DSN}
	if st.DSN == "" {
		if err := st.useEmbedded(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	var err error
	if cfg.Existing {
		err = st.openExisting(ctx, cfg)
	} else {
		err = st.openMigrated(ctx, cfg, log)
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// useEmbedded points st at the embedded server of cfg.DataDir: the one a
// running flowwarden serves, or one started here.
func (st *Storage) useEmbedded(ctx context.Context, cfg StorageConfig, log *slog.Logger) error {
	if r, err := embedded.FindRunning(cfg.DataDir); err == nil {
		st.DSN, st.readerDSN = r.DSN(DefaultDatabase), r.ReaderDSN(DefaultDatabase)
		log.Debug("using the embedded ClickHouse of a running flowwarden", "pid", r.PID, "addr", r.Native)
		return nil
	}
	// The embedded server keeps its files in <data-dir>/clickhouse: without
	// them there is nothing to read, and starting one would create them.
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "clickhouse")); err != nil && cfg.Existing {
		return noDatabase(cfg)
	}
	srv, err := embedded.New(embedded.Config{DataDir: cfg.DataDir}, log)
	if err != nil {
		return fmt.Errorf("embedded ClickHouse (or pass --clickhouse): %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	st.Server = srv
	st.DSN, st.readerDSN = srv.DSN(DefaultDatabase), srv.ReaderDSN(DefaultDatabase)
	return nil
}

// openExisting connects without creating anything, and checks the cluster.
func (st *Storage) openExisting(ctx context.Context, cfg StorageConfig) error {
	conn, err := OpenExisting(ctx, st.DSN)
	if errors.Is(err, ErrNoDatabase) {
		return noDatabase(cfg)
	}
	if err != nil {
		return err
	}
	st.Conn = conn
	if cfg.Schema.Cluster != "" {
		if err := CheckCluster(ctx, conn, cfg.Schema.Cluster); err != nil {
			return fmt.Errorf("--clickhouse-cluster: %w", err)
		}
	}
	return nil
}

// openMigrated connects, creating the database, and migrates the schema
// (on every host of the cluster with Schema.EachHost).
func (st *Storage) openMigrated(ctx context.Context, cfg StorageConfig, log *slog.Logger) error {
	conn, err := Open(ctx, st.DSN)
	if err != nil {
		return err
	}
	st.Conn = conn
	if cfg.Schema.EachHost {
		return MigrateEachHost(ctx, conn, st.DSN, cfg.Schema, log)
	}
	return Migrate(ctx, conn, cfg.Schema, log)
}

// noDatabase names where no flowwarden database was found; it is
// ErrNoDatabase.
func noDatabase(cfg StorageConfig) error {
	if cfg.DSN != "" {
		return fmt.Errorf("--clickhouse %s: %w there (ingest or serve create one)", RedactDSN(cfg.DSN), ErrNoDatabase)
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		abs = cfg.DataDir
	}
	return fmt.Errorf("--data-dir %s holds %w (ingest or serve create one there; or give --clickhouse)", abs, ErrNoDatabase)
}
