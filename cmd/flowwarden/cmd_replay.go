package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flowwarden/flowwarden/ingest/hubble"
)

// addTLSFlags registers Hubble Relay-style TLS flags under a prefix.
func addTLSFlags(fs *pflag.FlagSet, prefix string, c *hubble.TLSConfig, server bool) {
	fs.BoolVar(&c.Enabled, prefix+"tls", false, "use TLS")
	fs.StringVar(&c.CertFile, prefix+"tls-cert", "", "TLS certificate file (client certificate for mTLS)")
	fs.StringVar(&c.KeyFile, prefix+"tls-key", "", "TLS key file")
	if server {
		fs.StringVar(&c.ClientCAFile, prefix+"tls-client-ca", "", "require client certificates signed by this CA (mTLS)")
		return
	}
	fs.StringVar(&c.CAFile, prefix+"tls-ca", "", "CA file to verify the server (default: system roots)")
	fs.StringVar(&c.ServerName, prefix+"tls-server-name", "", "server name to verify (Relay: <anything>.hubble-relay.cilium.io)")
	fs.BoolVar(&c.InsecureSkipVerify, prefix+"tls-insecure-skip-verify", false, "do not verify the server certificate (testing only)")
}

func newReplayCommand(g *globals) *cobra.Command {
	var cfg hubble.ReplayConfig
	cmd := &cobra.Command{
		Use:   "replay (FILE... | --file FILE...) [--listen ADDR] [--rate N] [--loop]",
		Short: "Serve recorded Hubble flows as a real observer gRPC server (for demos and tests)",
		Long: `Serve recorded Hubble flows (exporter JSON lines, gzip too) as a Hubble
observer gRPC server, answering as Hubble's own server does:

  hubble observe: every filter of the CLI (namespaces, pods, labels, IPs and
  CIDRs, FQDNs, verdicts, ports, protocols, node names, event types, HTTP
  fields, reply, identities, workloads, ... and --not; CEL expressions are
  refused), --all, --first N, --last N, --follow, --since, --until and
  field masks (--field-mask, and the default of compact output);
  hubble status (health service and server status), hubble list nodes (the
  nodes of the recording) and hubble list namespaces.

The server's buffer is one pass of the recording, in time order. With --loop,
the following passes (each later by the recording's span) are the new flows
a --follow stream receives after the buffer; --follow alone plays the
recording from its start. --rate caps each stream's flows per second.

--shift-to-now stamps the flows one after the other from now, 1/--rate apart:
flows appear as they are sent, but the recorded spikes and quiet spells are
flattened. --keep-spacing (with --shift-to-now) keeps each file's recorded
spacing instead: every file is moved to end now, so the first pass is the
recent past, sent at --rate, and later passes follow in real time. Detectors
that compare a window with the ones before it (egress spikes, beacons, DNS
tunnels, scans) then see the recording as it happened; make run uses it.`,
		Example: `  flowwarden replay --file testdata/hubble/basic-sample-400-tcp-flows.json --listen 127.0.0.1:4245 --rate 100 --loop --shift-to-now
  hubble observe --server 127.0.0.1:4245 --last 5 --follow --namespace bookinfo
  hubble status --server 127.0.0.1:4245
  flowwarden replay testdata/hubble/*.json --rate 500 --loop --shift-to-now
  flowwarden replay testdata/scenarios/*.jsonl.gz --rate 2000 --loop --shift-to-now --keep-spacing`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Files as arguments too, as every other command that reads
			// recordings takes them (shell globs).
			cfg.Files = append(cfg.Files, args...)
			if len(cfg.Files) == 0 {
				return errors.New("give at least one file (as an argument or after --file)")
			}
			if cfg.KeepSpacing && !cfg.ShiftToNow {
				return errors.New("--keep-spacing needs --shift-to-now")
			}
			if cfg.Rate < 0 {
				return fmt.Errorf("--rate %v must not be negative", cfg.Rate)
			}
			r, err := hubble.NewReplay(cfg, g.log)
			if err != nil {
				return err
			}
			return r.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Files, "file", nil, "Hubble JSON-lines file to serve (repeatable; files may also be given as arguments)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:4245", "gRPC listen address")
	f.Float64Var(&cfg.Rate, "rate", 0, "flows per second per client (0: unlimited)")
	f.BoolVar(&cfg.Loop, "loop", false, "repeat the recording forever, each pass later in time")
	f.BoolVar(&cfg.ShiftToNow, "shift-to-now", false, "move the recording's times so that it starts now")
	f.BoolVar(&cfg.KeepSpacing, "keep-spacing", false, "with --shift-to-now: keep each file's recorded spacing, every file moved to end now (the first pass is the past, sent at --rate; later passes in real time)")
	addTLSFlags(f, "", &cfg.TLS, true)
	return cmd
}
