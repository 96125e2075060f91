package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// globals are the flags every command shares.
type globals struct {
	configFile string
	clickhouse string
	dataDir    string
	kubeconfig string
	logLevel   string
	logFormat  string
	flowsTTL   time.Duration
	rollupTTL  time.Duration
	// ttlGiven: --flows-ttl / --rollup-ttl were set (flag, env or config),
	// so existing tables take them (see clickhouse.SchemaConfig.ApplyFlowsTTL).
	flowsTTLGiven, rollupTTLGiven bool
	cluster                       string
	replicated                    bool
	clusterDDL                    string
	log                           *slog.Logger
	// stderr is the command's standard error, for summaries that are not logs.
	stderr io.Writer
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "flowwarden",
		Short: "Network flows into forensics, alerts and least-privilege policies",
		Long: `flowwarden stores every Kubernetes network flow (Cilium Hubble, Istio/Envoy,
conntrack) in ClickHouse, detects attacks on the live stream, and writes the
network policies that would have stopped them.

With no --clickhouse, an embedded ClickHouse (libchdb.so) runs under --data-dir.

Printing commands take -o json|table|yaml; history readers take --since 30d or
an RFC 3339 time; "-" is stdin wherever a file is read. Shell completion:
flowwarden completion bash|zsh|fish|powershell --help.`,
		Example: `  flowwarden serve --hubble hubble-relay.kube-system.svc:443 --hubble-tls --clickhouse clickhouse://host:9000/flowwarden
  flowwarden query -o json "SELECT verdict, count() FROM flows GROUP BY verdict"
  flowwarden recommend --since 30d --out ./policies && flowwarden verify --policies ./policies --since 30d
  source <(flowwarden completion bash)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			path := g.configFile
			if !cmd.Flags().Changed("config") {
				path = os.Getenv("FLOWWARDEN_CONFIG")
			}
			if err := applyConfig(cmd, path); err != nil {
				return err
			}
			if g.flowsTTL < 0 || g.rollupTTL < 0 {
				return fmt.Errorf("--flows-ttl %s and --rollup-ttl %s cannot be negative (0 keeps data forever)", g.flowsTTL, g.rollupTTL)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			g.flowsTTLGiven, g.rollupTTLGiven = cmd.Flags().Changed("flows-ttl"), cmd.Flags().Changed("rollup-ttl")
			g.stderr = cmd.ErrOrStderr()
			opts := &slog.HandlerOptions{Level: lvl}
			switch g.logFormat {
			case "text":
				g.log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts))
			case "json":
				g.log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts))
			default:
				return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
			}
			slog.SetDefault(g.log)
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "YAML `file` whose keys set flags by name (e.g. clickhouse: clickhouse://host:9000/flowwarden); env FLOWWARDEN_CONFIG; at most 1 MiB")
	pf.StringVar(&g.clickhouse, "clickhouse", "", "ClickHouse DSN, e.g. clickhouse://user:pass@host:9000/flowwarden (env FLOWWARDEN_CLICKHOUSE); empty: embedded")
	pf.StringVar(&g.dataDir, "data-dir", "./flowwarden-data", "data directory: the embedded ClickHouse, serve's spool, the access-log read positions, the node's confirmed host firewall")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text (key=value) or json (one object per line, for log collectors)")
	_ = root.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig for reading the policies in force from the cluster (default: $KUBECONFIG, ~/.kube/config, or the pod's ServiceAccount)")
	pf.DurationVar(&g.flowsTTL, "flows-ttl", 90*24*time.Hour, "retention of raw flows (and nftables counter readings), counted from when they were stored (0: forever); given on an existing data dir, changes its tables' TTL")
	pf.DurationVar(&g.rollupTTL, "rollup-ttl", 400*24*time.Hour, "retention of the edges rollups and findings, counted from when they were stored (0: forever); given on an existing data dir, changes its tables' TTL")
	pf.StringVar(&g.cluster, "clickhouse-cluster", "", "ClickHouse cluster (remote_servers name): shard-local <table>_local tables with Distributed <table> tables over them")
	pf.BoolVar(&g.replicated, "clickhouse-replicated", true, "--clickhouse-cluster: Replicated*MergeTree local tables (needs Keeper and the {shard}/{replica} macros)")
	pf.StringVar(&g.clusterDDL, "clickhouse-cluster-ddl", "on-cluster", "--clickhouse-cluster: create the tables with ON CLUSTER DDL (on-cluster) or by connecting to every host (each-host)")

	root.AddCommand(
		newIngestCommand(g),
		newServeCommand(g),
		newReplayCommand(g),
		newQueryCommand(g),
		newDetectCommand(g),
		newRecommendCommand(g),
		newVerifyCommand(g),
		newEnforceCommand(g),
		newReportCommand(g),
		newVersionCommand(),
		newEmbeddedCommand(g),
	)
	return root
}

// maxConfigBytes caps the config file: it is read whole.
const maxConfigBytes = 1 << 20

// flagName is what a config key naming a flag looks like; other keys are
// not echoed in errors (a config pointed at the wrong file must not print
// its lines).
var flagName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)

// applyConfig fills every flag the command line did not set: first from
// FLOWWARDEN_<FLAG> environment variables, then from the YAML config file.
// One config file serves every subcommand: a key that is a flag of another
// command (serve's hubble, say, read by query) is ignored; a key that is no
// command's flag is an error, so a typo does not pass silently.
func applyConfig(cmd *cobra.Command, path string) error {
	values := map[string]any{}
	if path != "" {
		raw, err := readSmallFile(path, maxConfigBytes)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &values); err != nil {
			return fmt.Errorf("config %s: not a YAML map of flag names to values: %w", path, redactYAMLError(err))
		}
	}
	flags := cmd.Flags()
	known := map[string]bool{}
	var errs []string
	flags.VisitAll(func(f *pflag.Flag) {
		known[f.Name] = true
		if f.Changed {
			return
		}
		env := "FLOWWARDEN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := flags.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", env, err))
			}
			return
		}
		if v, ok := values[f.Name]; ok {
			var s string
			switch vv := v.(type) {
			case []any:
				parts := make([]string, len(vv))
				for i, p := range vv {
					parts[i] = fmt.Sprint(p)
				}
				// A repeatable flag (StringArray) takes the sequence as its
				// values: joined with commas it would be one value.
				if sv, ok := f.Value.(pflag.SliceValue); ok {
					if err := sv.Replace(parts); err != nil {
						errs = append(errs, fmt.Sprintf("config key %s: %v", f.Name, err))
					}
					f.Changed = true
					return
				}
				s = strings.Join(parts, ",")
			default:
				s = fmt.Sprint(vv)
			}
			if err := flags.Set(f.Name, s); err != nil {
				errs = append(errs, fmt.Sprintf("config key %s: %v", f.Name, err))
			}
		}
	})
	anyCommand := allFlagNames(cmd.Root())
	hidden := 0
	for k := range values {
		switch {
		case known[k], anyCommand[k]:
		case flagName.MatchString(k):
			errs = append(errs, fmt.Sprintf("config key %q is not a flag of any flowwarden command", k))
		default:
			hidden++
		}
	}
	if hidden > 0 {
		errs = append(errs, fmt.Sprintf("%d config keys are not flag names (not shown: is %s a flowwarden config?)", hidden, path))
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// quoted matches what YAML and JSON errors quote from their input.
var quoted = regexp.MustCompile("`[^`]*`|\"[^\"]*\"|'[^']*'")

// redactYAMLError drops the input quoted in a YAML error, keeping where
// and what: a config pointed at the wrong file must not print its lines.
func redactYAMLError(err error) error {
	return errors.New(quoted.ReplaceAllString(err.Error(), "…"))
}

// allFlagNames is the set of flag names of cmd and all its subcommands.
func allFlagNames(cmd *cobra.Command) map[string]bool {
	names := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cmd)
	return names
}

// errorExitAnnotation on a command sets the exit status of its errors (verify
// uses 2, as kubectl diff does, since its 1 means "would deny traffic").
const errorExitAnnotation = "flowwarden/error-exit-code"

// execute runs the command tree and returns the process's exit status: 0, a
// command's chosen exitCode (printed by the command itself), or the error's
// status (1, or the failing command's errorExitAnnotation) after printing
// the error to stderr.
func execute(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ec exitCode
	if errors.As(err, &ec) {
		return int(ec)
	}
	fmt.Fprintln(stderr, "flowwarden:", err)
	if cmd != nil {
		if c, err := strconv.Atoi(cmd.Annotations[errorExitAnnotation]); err == nil {
			return c
		}
	}
	return 1
}
