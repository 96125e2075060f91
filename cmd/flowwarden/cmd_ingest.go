package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/flowfile"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func newIngestCommand(g *globals) *cobra.Command {
	var (
		files     fileArgs
		batchSize int
		workers   int
		window    ingest.TimeWindow
		output    outputFlag
	)
	cmd := &cobra.Command{
		Use:   "ingest FILE... | --hubble-file FILE... | --envoy-file FILE...",
		Short: "Read flow files to the end into ClickHouse and print a summary",
		Long: `Reads recorded flow files to their end into ClickHouse and prints, per file
and in total, the flows written and the lines rejected with their reasons.

Files given as arguments are told apart by their content: Hubble JSON lines
(the exporter's files, hubble observe -o json) or Istio/Envoy access logs
(text or JSON), gzip-compressed or not. Hubble files are read first: they
teach who owns each pod address, and Envoy flows are attributed from that.
Every file is checked before anything starts. Exit status 1 when a file
yielded no flow.`,
		Example: `  flowwarden ingest testdata/hubble/*.json
  flowwarden ingest --hubble-file /var/run/cilium/hubble/events.log
  flowwarden ingest --hubble-file a.json b.json.gz --envoy-file istio-proxy.log -o json
  hubble observe --since 1h -o jsonpb | flowwarden ingest --hubble-file -
  kubectl logs deploy/productpage -c istio-proxy | flowwarden ingest --envoy-file -`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			files.args = args
			if !files.given() {
				return errors.New("nothing to ingest: name files (as arguments, or after --hubble-file or --envoy-file)")
			}
			checked, err := files.check()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := openStorage(ctx, g, false)
			if err != nil {
				return err
			}
			defer st.Close()
			metrics := clickhouse.NewWriterMetrics(nil)
			wcfg := clickhouse.ImportWriterConfig()
			wcfg.BatchSize = batchSize
			w, err := clickhouse.NewWriter(wcfg, st.DSN, metrics, g.log)
			if err != nil {
				return err
			}
			wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
			wdone := make(chan error, 1)
			go func() { wdone <- w.Run(wctx) }()

			start := time.Now()
			var readErr error
			var accepted, rejected int64
			// Hubble flows teach the identity cache who owns each pod IP; the
			// Envoy files, read after them, are attributed from it.
			identities := ingest.NewIdentityCache(time.Hour, 0)
			var perFile []ingestFile
			var empty []string
			for _, f := range checked {
				var stats ingest.Stats
				stopProgress := reportProgress(g, f.Path, &stats, start)
				if err := flowfile.Read(ctx, f, flowfile.Options{Workers: workers, Window: window}, identities, w, &stats); err != nil {
					readErr = errors.Join(readErr, fmt.Errorf("%s: %w", f.Path, err))
				}
				stopProgress()
				s := stats.Snapshot()
				accepted += s.Accepted
				rejected += s.RejectedTotal()
				if s.Accepted == 0 {
					empty = append(empty, f.Path)
				}
				perFile = append(perFile, ingestFile{File: f.Path, Kind: f.Kind.String(), Read: s.Read, Accepted: s.Accepted, Skipped: s.Skipped, Rejected: s.Rejected, Examples: s.Examples})
				if output.value == "table" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s (%s): %s\n", f.Path, f.Kind, s)
				}
			}
			stopWriter()
			werr := <-wdone
			written := accepted - int64(counterValue(metrics.Dropped))
			elapsed := time.Since(start)
			if output.value == "table" {
				fmt.Fprintf(cmd.OutOrStdout(), "total: %d flows written, %d lines rejected, in %s (%.0f flows/s)\n",
					written, rejected, elapsed.Round(time.Millisecond), float64(written)/elapsed.Seconds())
			} else if err := output.print(cmd.OutOrStdout(), ingestSummary{Files: perFile, Written: written, Rejected: rejected, Seconds: elapsed.Seconds()}, nil); err != nil {
				return errors.Join(readErr, werr, err)
			}
			if len(empty) > 0 {
				readErr = errors.Join(readErr, fmt.Errorf("no flow in %s", strings.Join(empty, ", ")))
			}
			return errors.Join(readErr, werr)
		},
	}
	files.flags(cmd)
	output.register(cmd, "table", "table", "json", "yaml")
	cmd.Flags().IntVar(&batchSize, "batch-size", clickhouse.ImportBatchSize, "rows per ClickHouse insert, batched per day (the flows table's partition: one part per insert) (bigger: fewer inserts and parts, less server time per row; an import holds about four batches of ~250 bytes per row)")
	cmd.Flags().IntVar(&workers, "workers", runtime.GOMAXPROCS(0), "goroutines decoding each Hubble file (1: in file order)")
	cmd.Flags().DurationVar(&window.MaxSkew, "max-clock-skew", ingest.DefaultMaxSkew, "reject flows dated more than this ahead of this host's clock (negative: no limit)")
	cmd.Flags().DurationVar(&window.MaxAge, "max-flow-age", 0, "reject flows older than this (0: none, so old recordings import)")
	return cmd
}

// ingestSummary is what ingest -o json|yaml prints.
type ingestSummary struct {
	Files    []ingestFile `json:"files"`
	Written  int64        `json:"written"`
	Rejected int64        `json:"rejected"`
	Seconds  float64      `json:"seconds"`
}

type ingestFile struct {
	File     string           `json:"file"`
	Kind     string           `json:"kind"`
	Read     int64            `json:"read"`
	Accepted int64            `json:"accepted"`
	Skipped  int64            `json:"skipped"`
	Rejected map[string]int64 `json:"rejected"`
	Examples []string         `json:"examples,omitempty"`
}

// reportProgress logs a file's progress every 5 s until the returned func is called.
func reportProgress(g *globals, file string, stats *ingest.Stats, start time.Time) func() {
	return logEvery(g, "ingesting", func() []any {
		s := stats.Snapshot()
		return []any{"file", file, "flows", s.Accepted, "rejected", s.RejectedTotal(), "elapsed", time.Since(start).Round(time.Second)}
	})
}

// reportRead logs how many stored flows have been read, every 5 s, until
// the returned func is called.
func reportRead(g *globals, what string, n *atomic.Int64, start time.Time) func() {
	return logEvery(g, what, func() []any {
		return []any{"flows_read", n.Load(), "elapsed", time.Since(start).Round(time.Second)}
	})
}

// logEvery logs msg with attrs() every 5 s until the returned func is called.
func logEvery(g *globals, msg string, attrs func() []any) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				g.log.Info(msg, attrs()...)
			}
		}
	}()
	return func() { close(done); <-stopped }
}
