package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func newIngestCommand(g *globals) *cobra.Command {
	var (
		hubbleFiles []string
		envoyFiles  []string
		batchSize   int
		workers     int
		window      ingest.TimeWindow
		output      outputFlag
	)
	cmd := &cobra.Command{
		Use:   "ingest --hubble-file FILE...",
		Short: "Read flow files to the end into ClickHouse and print a summary",
		Example: `  flowwarden ingest --hubble-file /var/run/cilium/hubble/events.log
  flowwarden ingest --hubble-file a.json --hubble-file b.json.gz --flows-ttl 0 -o json
  hubble observe --since 1h -o jsonpb | flowwarden ingest --hubble-file -
  kubectl logs deploy/productpage -c istio-proxy | flowwarden ingest --envoy-file -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hubbleFiles)+len(envoyFiles) == 0 {
				return errors.New("nothing to ingest: give --hubble-file or --envoy-file")
			}
			ctx := cmd.Context()
			st, err := openStorage(ctx, g)
			if err != nil {
				return err
			}
			defer st.close()
			metrics := clickhouse.NewWriterMetrics(nil)
			wcfg := clickhouse.DefaultWriterConfig()
			wcfg.BatchSize = batchSize
			w, err := clickhouse.NewWriter(wcfg, st.dsn, metrics, g.log)
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
			hubbleSink := ingest.Fanout{identities, w}
			var perFile []ingestFile
			each := func(files []string, read func(f string, stats *ingest.Stats) error) {
				for _, f := range files {
					var stats ingest.Stats
					stopProgress := reportProgress(g, f, &stats, start)
					if err := read(f, &stats); err != nil {
						readErr = errors.Join(readErr, err)
					}
					stopProgress()
					s := stats.Snapshot()
					accepted += s.Accepted
					rejected += s.RejectedTotal()
					perFile = append(perFile, ingestFile{File: f, Read: s.Read, Accepted: s.Accepted, Skipped: s.Skipped, Rejected: s.Rejected, Examples: s.Examples})
					if output.value == "table" {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", f, s)
					}
				}
			}
			each(hubbleFiles, func(f string, stats *ingest.Stats) error {
				return hubble.ReadFileConfig(ctx, f, hubble.FileConfig{Workers: workers, Window: window}, hubbleSink, stats)
			})
			each(envoyFiles, func(f string, stats *ingest.Stats) error {
				return envoy.ReadFileWindow(ctx, f, window, identities, w, stats)
			})
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
			return errors.Join(readErr, werr)
		},
	}
	cmd.Flags().StringArrayVar(&hubbleFiles, "hubble-file", nil, "Hubble exporter / `hubble observe -o json` file (repeatable; .gz is read compressed; - for stdin)")
	output.register(cmd, "table", "table", "json", "yaml")
	cmd.Flags().StringArrayVar(&envoyFiles, "envoy-file", nil, "Istio/Envoy access log, text or JSON (repeatable; - for stdin)")
	cmd.Flags().IntVar(&batchSize, "batch-size", 50000, "rows per ClickHouse insert")
	cmd.Flags().IntVar(&workers, "workers", runtime.GOMAXPROCS(0), "goroutines decoding each file (1: in file order)")
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
