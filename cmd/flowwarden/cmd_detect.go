package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/flowfile"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func newDetectCommand(g *globals) *cobra.Command {
	var (
		files      fileArgs
		win        window
		out        outputFlag
		current    string
		strictMTLS []string
	)
	cmd := &cobra.Command{
		Use:   "detect (FILE... | --hubble-file FILE... | --since D|TIME [--until D|TIME]) [-o json|table|yaml]",
		Short: "Run the detectors offline over flow files or stored history and print the findings",
		Long: `Runs the same detectors as serve, on flow event time, and prints every
finding: -o json, one object per line (the default), a table, or yaml.

Files (as arguments, told apart by content, or after --hubble-file and
--envoy-file; - is stdin) are read one after the other, Hubble first, each
kind in the order of its files' first flow (stdin and pipes last), each
file a recording: one that starts where the one before it ended, such as
the rotated parts of an exporter's file (hubble.log.2, hubble.log.1,
hubble.log, named in any order), goes on in the same detectors, so windows
that span the rotation are whole; one that goes back in time (another
recording of the same hours) gets detectors of its own, so it yields the
findings it yields alone.
--since reads the history stored in ClickHouse instead (a duration back from
now, such as 30d or 24h, or a time such as 2026-03-02T09:00:00Z; --until ends the
window, default now): every flow, and the nftables counter readings that
serve --nftables stored, which feed the nft-drop-spike detector too. Use it
to re-run the detectors over last week, or over an incident window.

--current-policies (a directory, or "cluster") gives plaintext-in-mesh the
Istio PeerAuthentications in force, and --strict-mtls-namespace names
namespaces that must use mutual TLS whatever they say; without either it
reports nothing.

A one-line summary (flows read, findings by severity) goes to stderr, even
when nothing was found. Exit status 0 whether or not anything was found.`,
		Example: `  flowwarden detect testdata/scenarios/metadata-probe.jsonl.gz testdata/hubble/*.json -o table
  flowwarden detect --since 7d
  flowwarden detect --since 2026-03-02T09:00:00Z --until 2026-03-02T10:00:00Z -o yaml
  hubble observe --since 1h -o jsonpb | flowwarden detect --hubble-file -`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			files.args = args
			if win.until != "" && !win.given() {
				return errors.New("--until needs --since")
			}
			if files.given() == win.given() {
				return errors.New("give either files (arguments, --hubble-file, --envoy-file) or --since")
			}
			var checked []flowfile.File
			if files.given() {
				var err error
				if checked, err = files.check(); err != nil {
					return err
				}
			}
			var found analyze.Collector
			dcfg, err := detectorConfig(cmd.Context(), g, current, strictMTLS)
			if err != nil {
				return err
			}
			var flows int
			if win.given() {
				eng, err := analyze.NewEngine(dcfg, &found, nil)
				if err != nil {
					return err
				}
				if flows, err = detectStored(cmd.Context(), g, win, eng, &found); err != nil {
					return err
				}
				eng.Flush()
			} else if flows, err = detectFiles(cmd.Context(), g, checked, dcfg, &found); err != nil {
				return err
			}
			findings := found.Findings()
			for i := range findings {
				clickhouse.RenderQuery(&findings[i])
			}
			if err := printFindings(cmd.OutOrStdout(), out.value, findings); err != nil {
				return err
			}
			g.summarize(detectSummary(flows, findings), "detect done", "flows_read", flows, "findings", len(findings), "by_severity", bySeverity(findings))
			return nil
		},
	}
	files.flags(cmd)
	win.register(cmd, "run over the stored history")
	out.register(cmd, "json", "json", "table", "yaml")
	cmd.Flags().StringVar(&current, "current-policies", "", "the PeerAuthentications in force, for plaintext-in-mesh: a directory of YAML, or \"cluster\"")
	cmd.Flags().StringArrayVar(&strictMTLS, "strict-mtls-namespace", nil, "a namespace whose inbound requests must all use mutual TLS, whatever its PeerAuthentications say (repeatable)")
	return cmd
}

// detectFiles runs the detectors over files, each a recording
// (analyze.Recordings, as recommend does): read in the order of their first
// flow (flowfile.InTimeOrder), a file that continues the one before it (a
// rotated part) goes on in the same detectors, one that goes back in time
// (another recording of the same hours) gets detectors of its own, so its
// findings are those it has alone. It returns how many flows it read.
func detectFiles(ctx context.Context, g *globals, files []flowfile.File, cfg analyze.Config, found analyze.FindingSink) (int, error) {
	files, err := flowfile.InTimeOrder(ctx, files)
	if err != nil {
		return 0, err
	}
	recs, err := analyze.NewRecordings(cfg, found)
	if err != nil {
		return 0, err
	}
	identities := ingest.NewIdentityCache(time.Hour, 0)
	var flows int
	for _, f := range files {
		recs.NextRecording()
		var stats ingest.Stats
		if err := flowfile.Read(ctx, f, flowfile.Options{Workers: 1}, identities, recs, &stats); err != nil {
			return 0, fmt.Errorf("%s: %w", f.Path, err)
		}
		s := stats.Snapshot()
		flows += int(s.Accepted)
		if s.RejectedTotal() > 0 {
			g.summarize(fmt.Sprintf("%s: %s", f.Path, s), "rejected lines", "file", f.Path, "summary", s.String())
		}
	}
	recs.Flush()
	g.log.Debug("detectors ran over the files", "files", len(files), "recordings", recs.Runs)
	return flows, nil
}

// bySeverity counts findings per severity.
func bySeverity(findings []schemaFinding) map[string]int {
	n := map[string]int{}
	for _, f := range findings {
		n[string(f.Severity)]++
	}
	return n
}

// detectSummary is detect's line on stderr: flows read, findings by severity.
func detectSummary(flows int, findings []schemaFinding) string {
	bySeverity := bySeverity(findings)
	var parts []string
	for _, sev := range []string{"critical", "warning", "info"} {
		if n := bySeverity[sev]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, sev))
			delete(bySeverity, sev)
		}
	}
	for sev, n := range bySeverity {
		parts = append(parts, fmt.Sprintf("%d %s", n, sev))
	}
	s := fmt.Sprintf("detect: %d flows read, %d findings", flows, len(findings))
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// detectStored feeds the flows and nftables counter readings stored over
// [since, until) to the detectors and returns how many flows it read.
func detectStored(ctx context.Context, g *globals, win window, eng *analyze.Engine, found analyze.FindingSink) (int, error) {
	now := time.Now()
	from, to, err := win.bounds(now)
	if err != nil {
		return 0, err
	}
	if to.IsZero() {
		to = now
	}
	st, err := openStorage(ctx, g, true)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	var read atomic.Int64
	defer reportRead(g, "detecting over stored flows", &read, time.Now())()
	flows, counters, err := analyze.DetectHistory(ctx, eng, analyze.DefaultDropRateConfig(), found,
		readCounter{clickhouse.History{Conn: st.Conn, From: from, To: to}, &read})
	if err != nil {
		return 0, err
	}
	g.log.Info("stored history read", "from", from, "until", to, "flows", flows, "counter_readings", counters)
	if flows == 0 && counters == 0 {
		g.log.Warn("nothing stored in the window", "from", from, "until", to)
	}
	return flows, nil
}

// readCounter counts the flows read from a history, for the progress log.
type readCounter struct {
	clickhouse.History
	n *atomic.Int64
}

func (r readCounter) EachFlow(ctx context.Context, fn func(*schema.Flow)) error {
	return r.History.EachFlow(ctx, func(f *schema.Flow) { r.n.Add(1); fn(f) })
}

func printFindings(w io.Writer, format string, findings []schemaFinding) error {
	if format == "yaml" {
		recs := make([]any, len(findings))
		for i, f := range findings {
			recs[i] = f.Record()
		}
		o := outputFlag{value: "yaml"}
		return o.print(w, recs, nil)
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		for _, f := range findings {
			if err := enc.Encode(f.Record()); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tEND\tSEVERITY\tDETECTOR\tSUBJECT\tSTATUS\tSUMMARY")
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Start.UTC().Format("2006-01-02 15:04:05"), f.End.UTC().Format("15:04:05"),
			f.Severity, f.Detector, f.Subject(), f.Status, f.Summary)
	}
	return tw.Flush()
}
