package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/hubble"
)

func newDetectCommand(g *globals) *cobra.Command {
	var (
		files  []string
		format string
	)
	cmd := &cobra.Command{
		Use:   "detect --hubble-file FILE... [--format json|table]",
		Short: "Run the detectors offline over flow files and print the findings",
		Long: `Runs the same detectors as serve, on flow event time, over recorded files
(read in order, one after the other) and prints every finding: JSON, one
object per line, or a table. Exit status 0 whether or not anything was found.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("give at least one --hubble-file")
			}
			if format != "json" && format != "table" {
				return fmt.Errorf("--format %q: want json or table", format)
			}
			var found analyze.Collector
			eng, err := analyze.NewEngine(analyze.DefaultConfig(), &found, nil)
			if err != nil {
				return err
			}
			for _, f := range files {
				var stats ingest.Stats
				if err := hubble.ReadFile(cmd.Context(), f, 1, eng, &stats); err != nil {
					return err
				}
				if s := stats.Snapshot(); s.RejectedTotal() > 0 {
					g.log.Warn("rejected lines", "file", f, "summary", s.String())
				}
			}
			eng.Flush()
			return printFindings(cmd.OutOrStdout(), format, found.Findings())
		},
	}
	cmd.Flags().StringArrayVar(&files, "hubble-file", nil, "Hubble JSON-lines file (repeatable)")
	cmd.Flags().StringVar(&format, "format", "json", "output: json (one finding per line) or table")
	return cmd
}

func printFindings(w io.Writer, format string, findings []schemaFinding) error {
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
		subject := strings.Trim(f.Namespace+"/"+f.Workload, "/")
		if f.Peer != "" {
			subject += " → " + f.Peer
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Start.UTC().Format("2006-01-02 15:04:05"), f.End.UTC().Format("15:04:05"),
			f.Severity, f.Detector, subject, f.Status, f.Summary)
	}
	return tw.Flush()
}
