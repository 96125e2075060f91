package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	nftlib "github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	ctpkg "github.com/ti-mo/conntrack"
	"golang.org/x/sync/errgroup"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/alerting"
	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/enforcer/webui"
	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/conntrack"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/ingest/nftables"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func newServeCommand(g *globals) *cobra.Command {
	var (
		obsCfg        hubble.ObserverConfig
		wcfg          = clickhouse.DefaultWriterConfig()
		policyCfg     = enforcer.DefaultConfig()
		resume        bool
		sinceIn       string
		detect        bool
		amCfg         alerting.Config
		noSpool       bool
		httpCfg       webui.ServerConfig
		tokenFile     string
		page          bool
		currentDir    string
		strictMTLS    []string
		currentEvery  time.Duration
		withConntrack bool
		withNftables  bool
		restoreHostFW bool
		host          hostSources
		envoyFiles    []string
	)
	cmd := &cobra.Command{
		Use:   "serve (--hubble ADDR | --envoy-file F | --conntrack | --nftables)...",
		Short: "Stream flows into ClickHouse, run the detectors and alert; serve the page, /metrics and /healthz",
		Example: `  flowwarden serve --hubble hubble-relay.kube-system.svc:443 --hubble-tls \
      --hubble-tls-ca ca.crt --hubble-tls-cert client.crt --hubble-tls-key client.key \
      --hubble-tls-server-name instance.hubble-relay.cilium.io`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if obsCfg.Addr == "" && !withConntrack && !withNftables && len(envoyFiles) == 0 {
				return errors.New("no flow source: give --hubble ADDR, --envoy-file, --conntrack or --nftables")
			}
			if (httpCfg.TLSCert == "") != (httpCfg.TLSKey == "") {
				return errors.New("--tls-cert and --tls-key go together")
			}
			if httpCfg.BearerToken, err = readToken(tokenFile); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := openStorage(ctx, g, false)
			if err != nil {
				return err
			}
			defer st.Close()

			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newBuildInfoCollector())
			if wcfg.SpoolDir == "" && !noSpool {
				wcfg.SpoolDir = filepath.Join(g.dataDir, "spool")
			}
			wmetrics := clickhouse.NewWriterMetrics(reg)
			w, err := clickhouse.NewWriter(wcfg, st.DSN, wmetrics, g.log)
			if err != nil {
				return err
			}
			if sinceIn != "" {
				if obsCfg.Since, err = parseWhen(sinceIn, time.Now(), "--hubble-since"); err != nil {
					return err
				}
			}
			var resumeAt time.Time
			var resumeKeys []string
			if resume {
				if resumeAt, resumeKeys, err = w.ResumePoint(ctx, st.Conn, "hubble"); err != nil {
					return err
				}
			}
			hubbleStats := &ingest.Stats{}
			envoyStats := &ingest.Stats{}
			reg.MustRegister(ingest.NewStatsCollector(map[string]*ingest.Stats{"hubble": hubbleStats, "envoy": envoyStats}))

			// Detectors see every flow the writer stores; findings go to the
			// findings table and, when configured, to Alertmanager.
			var sink ingest.Sink = w
			var eng *analyze.Engine
			var dropRate *analyze.DropRate // nftables drop-rule spikes, fed by --nftables
			findingSinks := analyze.Fanout{}
			store := clickhouse.NewFindingStore(st.Conn, reg, g.log)
			var sender *alerting.Sender
			if detect {
				findingSinks = append(findingSinks, store)
				if len(amCfg.Alertmanagers) > 0 {
					if sender, err = alerting.New(amCfg, alerting.NewMetrics(reg), g.log); err != nil {
						return err
					}
					findingSinks = append(findingSinks, sender)
				}
				detectorMetrics := analyze.NewMetrics(reg)
				dcfg, err := detectorConfig(ctx, g, currentDir, strictMTLS)
				if err != nil {
					return err
				}
				// Detectors name the flows behind a finding; the storage
				// package writes its SQL before the store and Alertmanager see it.
				rendered := withQuery(findingSinks)
				if eng, err = analyze.NewEngine(dcfg, rendered, detectorMetrics); err != nil {
					return err
				}
				if dropRate, err = analyze.NewDropRate(analyze.DefaultDropRateConfig(), rendered, detectorMetrics); err != nil {
					return err
				}
				sink = ingest.Fanout{w, eng}
			}
			// Hubble teaches the identity cache; Envoy and conntrack flows are
			// attributed from it.
			identities := ingest.NewIdentityCache(10*time.Minute, 0)
			learnSink := ingest.Fanout{identities, sink}
			hubbleAddr := obsCfg.Addr
			if hubbleAddr == "" {
				obsCfg.Addr = "unused:0"
			}
			obs, err := hubble.NewObserver(obsCfg, learnSink, hubbleStats, g.log)
			if err != nil {
				return err
			}
			if resumeAt.After(obsCfg.Since) && obs.Resume(resumeAt, resumeKeys) {
				g.log.Info("resuming the Hubble stream after the newest durable flow", "since", resumeAt, "already_held_at_that_time", len(resumeKeys))
			}
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
			// /healthz: not ok while flows cannot be stored; /readyz: also
			// while ClickHouse or the Hubble stream is not there.
			health := &webui.Health{}
			health.Check("storage", func(context.Context) error { return w.Failure() })
			health.Ready("clickhouse", func(ctx context.Context) error { return st.Conn.Ping(ctx) })
			if hubbleAddr != "" {
				health.Ready("hubble", obs.Connected)
			}
			health.Info(func() map[string]any {
				s := hubbleStats.Snapshot()
				return map[string]any{"hubble_connects": obs.Connects(), "last_flow_time": obs.LastFlowTime(),
					"flows_read": s.Read, "flows_accepted": s.Accepted, "flows_rejected": s.RejectedTotal()}
			})
			mux.Handle("GET /healthz", health.Healthz())
			mux.Handle("GET /readyz", health.Readyz())
			mux.Handle("GET /livez", health.Livez())
			httpSrv, err := webui.NewServer(httpCfg, mux, g.log)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			if exposed, protection := httpSrv.Exposed(); exposed && protection == "" {
				g.log.Warn("--listen is reachable from other machines and nothing protects it: anyone who reaches it reads the service map, findings and their SQL (and /metrics); give --auth-token-file or --tls-client-ca, or listen on 127.0.0.1", "listen", httpCfg.Listen)
			} else if exposed {
				g.log.Info("--listen is reachable from other machines", "listen", httpCfg.Listen, "protected_by", protection)
			}
			var current []networkingv1.NetworkPolicy
			if currentDir != "" {
				if current, err = loadPolicies(ctx, g, currentDir); err != nil {
					if currentDir != fromCluster {
						return err
					}
					// The API server may be out of reach for a while; the page
					// diffs against no policies until a refresh gets them.
					g.log.Warn("policies in force: listing failed; retrying every --current-refresh", "err", err)
				}
			}
			// The page only reads: it logs in as the read-only user.
			pageConn, err := st.OpenReader(ctx)
			if err != nil {
				return err
			}
			defer pageConn.Close()
			pageH := newPage(webui.Config{Current: current}, policyCfg, clickhouse.NewReader(pageConn), g.log)
			if page {
				mux.Handle("GET /{$}", pageH)
			}

			// The writer outlives the sources so that it flushes what they gave
			// it: sources run through source(), and shutdown waits for them
			// before it stops the writer (a flow a source passed on after that
			// would be refused).
			grp, gctx := errgroup.WithContext(ctx)
			var sources sync.WaitGroup
			source := func(run func() error) {
				sources.Add(1)
				grp.Go(func() error { defer sources.Done(); return run() })
			}
			wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
			defer stopWriter()
			wdone := make(chan error, 1)
			go func() { wdone <- w.Run(wctx) }()
			// The embedded ClickHouse is supervised until everything that
			// writes to it is done: it stops last.
			sctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
			defer stopServer()
			sdone := make(chan error, 1)
			if st.Server != nil {
				go func() { sdone <- st.Server.Run(sctx) }()
			} else {
				sdone <- nil
			}
			if hubbleAddr != "" {
				source(func() error { return obs.Run(gctx) })
			}
			if currentDir == fromCluster && currentEvery > 0 {
				grp.Go(func() error { refreshPolicies(gctx, g, pageH, currentEvery); return nil })
				if eng != nil {
					grp.Go(func() error { refreshPeerAuthentications(gctx, g, eng, currentEvery); return nil })
				}
			}
			if len(envoyFiles) > 0 {
				// Where each access log was read to is kept in the data
				// directory, so a restart reads what was written meanwhile.
				if err := os.MkdirAll(g.dataDir, 0o755); err != nil {
					return fmt.Errorf("--data-dir: %w", err)
				}
				positions, err := envoy.OpenPositions(filepath.Join(g.dataDir, envoy.PositionsFile))
				if err != nil {
					return err
				}
				followed := map[string]bool{}
				for _, f := range envoyFiles {
					if abs, err := filepath.Abs(f); err == nil {
						f = abs
					}
					if followed[f] {
						continue // named twice: one follower (two would read every line twice)
					}
					followed[f] = true
					source(func() error {
						return envoy.Follow(gctx, f, envoy.FollowConfig{Positions: positions, Window: obsCfg.Window}, identities, sink, envoyStats)
					})
				}
			}
			node := host.node
			if withConntrack || withNftables {
				if err := host.open(); err != nil {
					return err
				}
				defer host.close()
			}
			if withConntrack {
				ctConn, err := ctpkg.Dial(host.netlinkConfig())
				if err != nil {
					return fmt.Errorf("--conntrack needs CAP_NET_ADMIN: %w", err)
				}
				defer ctConn.Close()
				events, err := ctpkg.Dial(host.netlinkConfig())
				if err != nil {
					g.log.Warn("conntrack: no socket for destroy events; connections are reported from the dumps", "err", err)
					events = nil
				}
				if on, err := conntrack.Accounting(host.nsFD); err != nil {
					g.log.Warn("conntrack: cannot tell whether accounting is on", "err", err)
				} else if !on {
					g.log.Warn("conntrack: accounting is off, so conntrack flows carry no bytes or packets and a long-lived connection is reported once; turn it on with sysctl -w "+conntrack.AccountingSysctl+"=1",
						"sysctl", conntrack.AccountingSysctl)
				}
				p := &conntrack.Poller{Conn: ctConn, Events: events, Node: node, Interval: host.ctInterval, Report: host.ctReport, Log: g.log, Sink: func(flows []schema.Flow) error {
					for i := range flows {
						identities.Enrich(&flows[i])
					}
					return sink.Write(gctx, flows...)
				}, LocalAddresses: func() ([]netip.Addr, error) { return conntrack.InterfaceAddresses(host.nsFD) }}
				source(func() error { return p.Run(gctx) })
			}
			if withNftables {
				nft, err := nftlib.New(host.nftOptions()...)
				if err != nil {
					return fmt.Errorf("--nftables needs CAP_NET_ADMIN: %w", err)
				}
				if restoreHostFW {
					kept := filepath.Join(g.dataDir, hostfw.ConfirmedFile)
					outcome, at, err := hostfw.RestoreIfMissing(nft, kept)
					switch {
					case err != nil:
						// The node stays as it is; serving the sources matters more.
						g.log.Error("host firewall: could not restore the confirmed ruleset", "file", kept, "err", err)
					case outcome == hostfw.Restored:
						g.log.Warn("host firewall: table inet flowwarden was gone after a reboot; restored the ruleset confirmed earlier", "file", kept, "confirmed_at", at)
					case outcome == hostfw.RemovedThisBoot:
						g.log.Warn("host firewall: table inet flowwarden was removed during this boot; left off (it comes back after a reboot unless "+kept+" is deleted)", "confirmed_at", at)
					}
				}
				p := &nftables.Poller{Conn: nft, Node: node, Interval: host.nftInterval, Log: g.log, Store: func(ctx context.Context, samples []schema.CounterSample) error {
					if dropRate != nil {
						dropRate.Observe(samples)
					}
					return clickhouse.InsertCounters(ctx, st.Conn, samples)
				}}
				source(func() error { return p.Run(gctx) })
			}
			if eng != nil {
				grp.Go(func() error { return store.Run(wctx) })
				// The engine closes windows on its own wall clock, whatever
				// the sources (Hubble, Envoy files, conntrack).
				source(func() error { return eng.Run(gctx) })
			}
			if sender != nil {
				grp.Go(func() error { return sender.Run(wctx) })
			}
			grp.Go(func() error { return httpSrv.Serve(gctx) })
			g.log.Info("serving", "listen", httpSrv.Addr().String(), "hubble", cmp.Or(hubbleAddr, "none"), "clickhouse", clickhouse.RedactDSN(st.DSN))
			<-gctx.Done()
			// Sources stop first, then the writer flushes and the findings
			// store and the sender finish, then the database stops.
			var errs []error
			sources.Wait()
			g.log.Info("stopping: sources stopped, flushing the writer")
			stopWriter()
			if err := <-wdone; err != nil {
				errs = append(errs, err)
			}
			g.log.Info("writer flushed", "flows_written_since_start", int64(counterVecSum(wmetrics.Written)), "flows_dropped", int64(counterValue(wmetrics.Dropped)))
			if err := grp.Wait(); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
			stopServer()
			if err := <-sdone; err != nil {
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	policyFlags(f, &policyCfg)
	f.StringVar(&httpCfg.Listen, "listen", "127.0.0.1:9965", "HTTP address for the page (/), /metrics, /healthz, /readyz and /livez (all read-only); a non-loopback address without --auth-token-file or --tls-client-ca is warned about")
	f.BoolVar(&page, "page", true, "serve the page on / (false: only /metrics, /healthz, /readyz and /livez, as the node agent does)")
	f.IntVar(&httpCfg.MaxConns, "max-connections", 256, "most connections the HTTP server holds open at once (more wait in the kernel's queue, holding no descriptor); idle ones are closed after 30 s, at once when three quarters are in use")
	f.StringVar(&tokenFile, "auth-token-file", "", "require \"Authorization: Bearer <token>\" for the page and /metrics, the token read from this file (or from $FLOWWARDEN_AUTH_TOKEN); /healthz, /readyz and /livez stay open for probes")
	f.StringVar(&httpCfg.ClientCA, "tls-client-ca", "", "with --tls-cert: require a client certificate signed by this CA (PEM) for the page and /metrics (mTLS); /healthz, /readyz and /livez stay open for probes")
	f.StringVar(&httpCfg.TLSCert, "tls-cert", "", "serve the page, /metrics, /healthz, /readyz and /livez over TLS with this certificate")
	f.StringVar(&currentDir, "current-policies", "", "the NetworkPolicies in force, for the page's semantic diff: a directory, or \"cluster\" (listed from the API server every --current-refresh); the PeerAuthentications there (from the cluster: listed again every --current-refresh) tell plaintext-in-mesh which workloads must use mutual TLS")
	f.StringArrayVar(&strictMTLS, "strict-mtls-namespace", nil, "a namespace whose inbound requests must all use mutual TLS, whatever its PeerAuthentications say (repeatable)")
	f.DurationVar(&currentEvery, "current-refresh", 5*time.Minute, "with --current-policies cluster: how often the policies in force are listed again")
	f.StringVar(&httpCfg.TLSKey, "tls-key", "", "key of --tls-cert")
	f.StringVar(&obsCfg.Addr, "hubble", "", "Hubble Relay or agent observer address (host:port)")
	f.StringArrayVar(&envoyFiles, "envoy-file", nil, "follow this Istio/Envoy access log like tail -F (repeatable); how far it was read is kept in --data-dir, so a restart reads what was written meanwhile")
	f.BoolVar(&withConntrack, "conntrack", false, "read this node's conntrack table (needs CAP_NET_ADMIN)")
	f.BoolVar(&withNftables, "nftables", false, "poll this node's nftables counters into nft_counters (needs CAP_NET_ADMIN)")
	f.BoolVar(&restoreHostFW, "restore-host-firewall", true, "with --nftables: at start, load the host firewall last confirmed with enforce --host --apply (kept under --data-dir) when table inet flowwarden is missing, as after a reboot")
	host.flags(f)
	addTLSFlags(f, "hubble-", &obsCfg.TLS, false)
	f.StringVar(&sinceIn, "hubble-since", "", "on first start, also fetch flows this far back (1h, 2d) or from this time (RFC 3339)")
	f.BoolVar(&resume, "resume", true, "resume after the newest Hubble flow already stored (unless it is beyond --max-clock-skew)")
	f.DurationVar(&obsCfg.Window.MaxSkew, "max-clock-skew", ingest.DefaultMaxSkew, "reject flows dated more than this ahead of this host's clock, and never resume after such a time (negative: no limit)")
	f.DurationVar(&obsCfg.Window.MaxAge, "max-flow-age", 0, "reject live flows older than this (0: none; a replayed recording keeps its old times)")
	f.BoolVar(&detect, "detect", true, "run the detectors on the stream and store their findings")
	f.StringArrayVar(&amCfg.Alertmanagers, "alertmanager", nil, "Alertmanager base URL to send findings to (repeatable, e.g. an HA pair)")
	f.StringVar(&amCfg.Cluster, "cluster", "", "value of the cluster label on alerts")
	f.DurationVar(&amCfg.ResendInterval, "alert-resend-interval", 30*time.Second, "how often firing alerts are re-sent")
	f.IntVar(&wcfg.BatchSize, "batch-size", wcfg.BatchSize, "rows per ClickHouse insert")
	f.StringVar(&wcfg.SpoolDir, "spool-dir", "", "on-disk spool that makes accepted flows durable until inserted (default <data-dir>/spool)")
	f.BoolVar(&noSpool, "no-spool", false, "insert from memory only (an outage longer than the queue slows the source; a crash loses what is queued)")
	f.Int64Var(&wcfg.SpoolMaxBytes, "spool-max-bytes", wcfg.SpoolMaxBytes, "spool size cap; at the cap the sources are slowed")
	f.BoolVar(&wcfg.SpoolFsync, "spool-fsync", wcfg.SpoolFsync, "fsync every spool append")
	f.DurationVar(&wcfg.FlushInterval, "flush-interval", wcfg.FlushInterval, "longest wait before a partial batch is inserted")
	return cmd
}

// refreshPolicies lists the policies in force again every interval until
// ctx ends; a failed listing keeps the previous ones.
func refreshPolicies(ctx context.Context, g *globals, page *webui.Handler, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		nps, err := loadPolicies(ctx, g, fromCluster)
		if err != nil {
			g.log.Warn("policies in force: listing failed; keeping the previous ones", "err", err)
			continue
		}
		page.SetCurrent(nps)
	}
}

// readToken reads the HTTP bearer token from file (or, without one, from
// $FLOWWARDEN_AUTH_TOKEN); "" when neither is set. The token is never logged.
func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("FLOWWARDEN_AUTH_TOKEN")), nil
	}
	raw, err := readSmallFile(file, 4<<10)
	if err != nil {
		return "", fmt.Errorf("--auth-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("--auth-token-file %s is empty", file)
	}
	return tok, nil
}

// withQuery renders each finding's forensic SQL from what it selects
// (schema/clickhouse) before passing it on.
func withQuery(next analyze.FindingSink) analyze.FindingSink {
	return analyze.FindingFunc(func(f schema.Finding) {
		clickhouse.RenderQuery(&f)
		next.Finding(f)
	})
}

// newPage is serve's page: it recommends with the pipeline and the
// generator flags recommend uses (enforcer.Recommend: generate, then prove).
func newPage(cfg webui.Config, policies enforcer.Config, store webui.Store, log *slog.Logger) *webui.Handler {
	cfg.Recommend = func(graph *enforcer.Graph) (*enforcer.Result, error) { return enforcer.Recommend(graph, policies) }
	return webui.New(cfg, store, log)
}
