// Package clickhouse stores flow records in ClickHouse: the schema as
// versioned embedded migrations, a batching writer over the native protocol,
// and read-only query helpers for forensics.
package clickhouse

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	chgo "github.com/ClickHouse/ch-go"
	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DefaultDatabase is used when the DSN names none.
const DefaultDatabase = "flowwarden"

// SchemaConfig parameterises the DDL.
type SchemaConfig struct {
	// FlowsTTL is how long raw flows are kept; 0 keeps them forever.
	FlowsTTL time.Duration
	// RollupTTL is how long the edges_* rollups are kept; 0 keeps them forever.
	RollupTTL time.Duration
	// Cluster, when set, lays the tables out for a ClickHouse cluster of
	// that name (remote_servers): each table is a shard-local <name>_local
	// and <name> is a Distributed table over them, so that every query and
	// insert keeps using the plain names.
	Cluster string
	// Replicated makes the local tables Replicated*MergeTree (with the
	// {shard} and {replica} macros; needs ClickHouse Keeper).
	Replicated bool
	// EachHost runs the DDL on every host of the cluster over its own
	// connection instead of ON CLUSTER (for clusters without distributed
	// DDL, such as the embedded test cluster). See MigrateEachHost.
	EachHost bool
	// ApplyFlowsTTL and ApplyRollupTTL make Migrate change the TTL of
	// existing tables to FlowsTTL (flows, nft_counters) and RollupTTL
	// (edges_5m, edges_1d, findings) when it differs (ALTER TABLE ... MODIFY
	// TTL, logged). Without them an existing database keeps the retention
	// it has: FlowsTTL and RollupTTL only shape the tables created.
	ApplyFlowsTTL, ApplyRollupTTL bool
}

// DefaultSchemaConfig keeps raw flows 90 days and rollups 400 days (a full
// quarter plus margin for the quarterly report).
func DefaultSchemaConfig() SchemaConfig {
	return SchemaConfig{FlowsTTL: 90 * 24 * time.Hour, RollupTTL: 400 * 24 * time.Hour}
}

// Open connects to the ClickHouse named by dsn (clickhouse://user:pass@host:9000/db),
// creating the database if it does not exist.
func Open(ctx context.Context, dsn string) (driver.Conn, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse ClickHouse DSN %s: %w", RedactDSN(dsn), err)
	}
	db := opts.Auth.Database
	if db == "" {
		db = DefaultDatabase
	}
	opts.Auth.Database = ""
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	boot, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+QuoteIdent(db))
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %s on %s: %w", db, RedactDSN(dsn), err)
	}
	opts.Auth.Database = db
	return connect(ctx, dsn, opts)
}

// connect opens a connection with opts and pings it; errors name dsn with
// its password redacted.
func connect(ctx context.Context, dsn string, opts *ch.Options) (driver.Conn, error) {
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	return conn, nil
}

// ErrNoDatabase is returned by OpenExisting when the DSN's database does
// not exist or holds no flowwarden tables.
var ErrNoDatabase = errors.New("no flowwarden database")

// OpenExisting connects to the flowwarden database named by dsn, as Open
// does, but never creates it: readers of the store use it, and a database
// that does not exist, or has no flows table, is ErrNoDatabase.
func OpenExisting(ctx context.Context, dsn string) (driver.Conn, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse ClickHouse DSN %s: %w", RedactDSN(dsn), err)
	}
	if opts.Auth.Database == "" {
		opts.Auth.Database = DefaultDatabase
	}
	db := opts.Auth.Database
	opts.Auth.Database = ""
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	var n uint64
	err = conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'flows'", db).Scan(&n)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	if n == 0 {
		return nil, fmt.Errorf("database %s: %w", db, ErrNoDatabase)
	}
	opts.Auth.Database = db
	if conn, err = ch.Open(opts); err != nil {
		return nil, fmt.Errorf("connect to ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping ClickHouse %s: %w", RedactDSN(dsn), err)
	}
	return conn, nil
}

// nativeOptions turns a clickhouse-go DSN into ch-go options for the writer,
// with the same database defaulting as Open.
func nativeOptions(dsn string) (chgo.Options, error) {
	o, err := ch.ParseDSN(dsn)
	if err != nil {
		return chgo.Options{}, fmt.Errorf("parse ClickHouse DSN %s: %w", RedactDSN(dsn), err)
	}
	if len(o.Addr) == 0 {
		return chgo.Options{}, fmt.Errorf("ClickHouse DSN %s names no host", RedactDSN(dsn))
	}
	db := o.Auth.Database
	if db == "" {
		db = DefaultDatabase
	}
	opts := chgo.Options{
		Address:     o.Addr[0],
		Database:    db,
		User:        o.Auth.Username,
		Password:    o.Auth.Password,
		TLS:         o.TLS,
		ClientName:  "flowwarden",
		DialTimeout: 10 * time.Second,
		ReadTimeout: 5 * time.Minute,
	}
	if opts.User == "" {
		opts.User = "default"
	}
	if o.Compression != nil && o.Compression.Method == ch.CompressionLZ4 {
		opts.Compression = chgo.CompressionLZ4
	} else if o.Compression != nil && o.Compression.Method == ch.CompressionZSTD {
		opts.Compression = chgo.CompressionZSTD
	}
	return opts, nil
}

// RedactDSN hides the password of a DSN for logs and errors.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "<unparseable DSN>"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") || strings.Contains(strings.ToLower(k), "secret") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// QuoteIdent quotes an identifier for ClickHouse SQL.
func QuoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}

// QuoteString quotes a string literal for ClickHouse SQL.
func QuoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}

// Migration is one versioned schema change.
type Migration struct {
	Version    int
	Name       string
	Statements []string
	Checksum   string
}

// Migrations renders the embedded migrations for cfg, in version order.
func Migrations(cfg SchemaConfig) ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	params := map[string]int{
		"FlowsTTLDays":  int(cfg.FlowsTTL / (24 * time.Hour)),
		"RollupTTLDays": int(cfg.RollupTTL / (24 * time.Hour)),
	}
	funcs := cfg.templateFuncs()
	var out []Migration
	for _, n := range names {
		base := strings.TrimSuffix(n[len("migrations/"):], ".sql")
		vs, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(vs)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", n)
		}
		raw, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(raw)
		tmpl, err := template.New(n).Option("missingkey=error").Funcs(funcs).Parse(string(raw))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", n, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, params); err != nil {
			return nil, fmt.Errorf("migration %s: %w", n, err)
		}
		out = append(out, Migration{Version: v, Name: name, Statements: splitStatements(buf.String()), Checksum: hex.EncodeToString(sum[:8])})
	}
	return out, nil
}

// templateFuncs are the layout helpers of the migrations:
//
//	{{local "flows"}}             the storage table: flows, or flows_local on a cluster
//	{{onCluster}}                 "", or ON CLUSTER "name" (unless EachHost)
//	{{engine "MergeTree" "flows"}} the engine, Replicated* on a replicated cluster;
//	                              more arguments are the engine's own
//	{{distributed "flows" "key"}} on a cluster, the statement creating the
//	                              Distributed table "flows" sharded by key
func (cfg SchemaConfig) templateFuncs() template.FuncMap {
	local := func(name string) string {
		if cfg.Cluster == "" {
			return name
		}
		return name + "_local"
	}
	onCluster := func() string {
		if cfg.Cluster == "" || cfg.EachHost {
			return ""
		}
		return " ON CLUSTER " + QuoteIdent(cfg.Cluster)
	}
	return template.FuncMap{
		"local":     local,
		"onCluster": onCluster,
		"engine": func(engine, table string, args ...string) string {
			if cfg.Cluster != "" && cfg.Replicated {
				path := QuoteString("/clickhouse/tables/{shard}/{database}/" + local(table))
				return "Replicated" + engine + "(" + strings.Join(append([]string{path, "'{replica}'"}, args...), ", ") + ")"
			}
			if len(args) == 0 {
				return engine
			}
			return engine + "(" + strings.Join(args, ", ") + ")"
		},
		"distributed": func(table, key string) string {
			if cfg.Cluster == "" {
				return ""
			}
			return "CREATE TABLE IF NOT EXISTS " + table + onCluster() + " AS " + local(table) + "\n" +
				"ENGINE = Distributed(" + QuoteString(cfg.Cluster) + ", currentDatabase(), " + local(table) + ", " + key + ");"
		},
	}
}

// splitStatements splits a migration on semicolons that end a line, dropping
// comment-only lines. Migrations must not put ";\n" inside string literals.
func splitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, stmt)
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrate applies the migrations that are not yet recorded in
// schema_migrations. Running it again changes nothing.
func Migrate(ctx context.Context, conn driver.Conn, cfg SchemaConfig, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Cluster != "" {
		if _, err := clusterHosts(ctx, conn, cfg.Cluster); err != nil {
			return err
		}
		if !cfg.EachHost {
			var db string
			if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&db); err != nil {
				return fmt.Errorf("current database: %w", err)
			}
			if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+QuoteIdent(db)+" ON CLUSTER "+QuoteIdent(cfg.Cluster)); err != nil {
				return fmt.Errorf("create database %s on cluster %s: %w", db, cfg.Cluster, err)
			}
		}
	}
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations
(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = MergeTree ORDER BY version`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[int]string{}
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[int(v)] = sum
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	migs, err := Migrations(cfg)
	if err != nil {
		return err
	}
	for _, m := range migs {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum {
				log.Warn("applied migration differs from the embedded one; not re-applied", "version", m.Version, "name", m.Name)
			}
			continue
		}
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)", uint32(m.Version), m.Name, m.Checksum); err != nil {
			return fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		log.Info("applied migration", "version", m.Version, "name", m.Name)
	}
	return applyRetention(ctx, conn, cfg, log)
}

// retention is the TTL a table should have: rows expire after ttl counted
// from expr (0: kept forever).
type retention struct {
	table, expr, flag string
	ttl               time.Duration
}

// retentions lists the tables whose TTL the configuration sets. Flows and
// the rollups count from stored_at (migration 0004), findings from when
// they were stored (updated_at), counter readings from their polling time
// (which is when they are stored).
func (cfg SchemaConfig) retentions() []retention {
	local := func(name string) string {
		if cfg.Cluster == "" {
			return name
		}
		return name + "_local"
	}
	var out []retention
	if cfg.ApplyFlowsTTL {
		out = append(out,
			retention{local("flows"), "stored_at", "--flows-ttl", cfg.FlowsTTL},
			retention{local("nft_counters"), "toDateTime(time)", "--flows-ttl", cfg.FlowsTTL})
	}
	if cfg.ApplyRollupTTL {
		out = append(out,
			retention{local("edges_5m"), "stored_at", "--rollup-ttl", cfg.RollupTTL},
			retention{local("edges_1d"), "stored_at", "--rollup-ttl", cfg.RollupTTL},
			retention{local("findings"), "toDateTime(updated_at)", "--rollup-ttl", cfg.RollupTTL})
	}
	return out
}

// ttlClause is r's TTL expression as ClickHouse shows it in
// system.tables.engine_full ("" for none): whole days, else hours.
func (r retention) ttlClause() string {
	switch {
	case r.ttl <= 0:
		return ""
	case r.ttl%(24*time.Hour) == 0:
		return fmt.Sprintf("%s + toIntervalDay(%d)", r.expr, r.ttl/(24*time.Hour))
	default:
		return fmt.Sprintf("%s + toIntervalHour(%d)", r.expr, (r.ttl+time.Hour-1)/time.Hour)
	}
}

// ttlInEngine finds the table TTL in an engine_full text.
var ttlInEngine = regexp.MustCompile(`\sTTL\s+(.*?)(?:\s+SETTINGS\s|$)`)

// TableTTL returns the TTL expression of a table of the connection's
// database as ClickHouse shows it ("" when it has none).
func TableTTL(ctx context.Context, conn driver.Conn, table string) (string, error) {
	var engine string
	if err := conn.QueryRow(ctx, "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&engine); err != nil {
		return "", fmt.Errorf("read the TTL of %s: %w", table, err)
	}
	if m := ttlInEngine.FindStringSubmatch(engine); m != nil {
		return strings.TrimSpace(m[1]), nil
	}
	return "", nil
}

// applyRetention makes the tables' TTLs match the configuration, logging
// every change. MODIFY TTL also re-evaluates the rows already stored (a
// background mutation), so a shorter retention drops what is now too old
// and a longer one keeps what would have gone.
func applyRetention(ctx context.Context, conn driver.Conn, cfg SchemaConfig, log *slog.Logger) error {
	onCluster := cfg.templateFuncs()["onCluster"].(func() string)()
	for _, r := range cfg.retentions() {
		have, err := TableTTL(ctx, conn, r.table)
		if err != nil {
			return err
		}
		want := r.ttlClause()
		if have == want {
			continue
		}
		stmt := "ALTER TABLE " + QuoteIdent(r.table) + onCluster + " REMOVE TTL"
		if want != "" {
			stmt = "ALTER TABLE " + QuoteIdent(r.table) + onCluster + " MODIFY TTL " + want
		}
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s %s: change the TTL of %s: %w", r.flag, r.ttl, r.table, err)
		}
		from, to := have, want
		if from == "" {
			from = "none"
		}
		if to == "" {
			to = "none (kept forever)"
		}
		log.Info("retention changed", "table", r.table, "flag", r.flag, "from", from, "to", to)
	}
	return nil
}

// MigrateEachHost applies the migrations on every host of cfg.Cluster, each
// over a connection of its own (the DSN's user and database, the host's
// native port from system.clusters), for clusters that do not run
// distributed DDL. Every host records its own schema_migrations.
func MigrateEachHost(ctx context.Context, conn driver.Conn, dsn string, cfg SchemaConfig, log *slog.Logger) error {
	hosts, err := clusterHosts(ctx, conn, cfg.Cluster)
	if err != nil {
		return err
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return fmt.Errorf("ClickHouse DSN %s: want clickhouse://user@host:port/db to reach the other hosts", RedactDSN(dsn))
	}
	for _, h := range hosts {
		hu := *u
		hu.Host = h
		c, err := Open(ctx, hu.String())
		if err != nil {
			return fmt.Errorf("cluster %s host %s: %w", cfg.Cluster, h, err)
		}
		err = Migrate(ctx, c, cfg, log)
		c.Close()
		if err != nil {
			return fmt.Errorf("cluster %s host %s: %w", cfg.Cluster, h, err)
		}
	}
	return nil
}

// CheckCluster fails, with a clear error, when the server does not define
// the cluster (remote_servers).
func CheckCluster(ctx context.Context, conn driver.Conn, cluster string) error {
	_, err := clusterHosts(ctx, conn, cluster)
	return err
}

// clusterHosts lists host:port (native protocol) of every replica of the cluster.
func clusterHosts(ctx context.Context, conn driver.Conn, cluster string) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cluster)
	if err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var host string
		var port uint16
		if err := rows.Scan(&host, &port); err != nil {
			return nil, fmt.Errorf("read system.clusters: %w", err)
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cluster %q is not defined on this server (remote_servers in its configuration; see system.clusters)", cluster)
	}
	return out, nil
}

// ErrNotReadOnly is returned by Query for statements that could change data.
var ErrNotReadOnly = errors.New("only read-only statements (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) are allowed")
