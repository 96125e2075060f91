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
	"time"

	nftlib "github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	ctpkg "github.com/ti-mo/conntrack"
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

// serveOptions are serve's flags.
type serveOptions struct {
	obsCfg        hubble.ObserverConfig
	wcfg          clickhouse.WriterConfig
	policyCfg     enforcer.Config
	allowFlagged  bool // the page learns the edges the stored findings flag too
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
	shardIn       string
}

func newServeCommand(g *globals) *cobra.Command {
	o := &serveOptions{wcfg: clickhouse.DefaultWriterConfig(), policyCfg: enforcer.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "serve (--hubble ADDR | --envoy-file F | --conntrack | --nftables)...",
		Short: "Stream flows into ClickHouse, run the detectors and alert; serve the page, /metrics and /healthz",
		Example: `  flowwarden serve --hubble hubble-relay.kube-system.svc:443 --hubble-tls \
      --hubble-tls-ca ca.crt --hubble-tls-cert client.crt --hubble-tls-key client.key \
      --hubble-tls-server-name instance.hubble-relay.cilium.io`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context(), g) },
	}
	o.flags(cmd.Flags())
	return cmd
}

// servePlan is what serve runs, by stage. Its lifecycle declares the order
// once: started database first, then the storage, the detectors, the
// sources, and the HTTP server last (/healthz answers once the sources run);
// stopped in reverse: the HTTP server, the sources (so that every flow they
// passed on reaches the writer), the detectors' clock, the writer (it
// flushes) with the findings store and the Alertmanager sender, and the
// embedded database last.
type servePlan struct {
	database     runner // the embedded ClickHouse; nil with --clickhouse
	openWriter   func() error
	writer       runner
	findings     []runner // findings store, Alertmanager sender
	detectors    []runner // the engine's wall clock
	startSources func(context.Context) error
	sources      []runner // Hubble, Envoy files, conntrack, nftables, policy refreshes
	startWeb     func(context.Context) error
	web          runner // the HTTP server: it answers once the sources run
	flushed      func() // logs what the writer wrote
	log          *slog.Logger
}

func (p *servePlan) lifecycle() *lifecycle {
	l := &lifecycle{log: p.log}
	if p.database != nil {
		l.add(&stage{name: "database", parts: []runner{p.database}})
	}
	l.add(&stage{name: "storage", start: func(context.Context) error { return p.openWriter() },
		parts:    append([]runner{p.writer}, p.findings...),
		stopping: func() { p.log.Info("stopping: sources stopped, flushing the writer") },
		stopped:  p.flushed})
	l.add(&stage{name: "detectors", parts: p.detectors})
	l.add(&stage{name: "sources", start: p.startSources, parts: p.sources})
	l.add(&stage{name: "web", start: p.startWeb, parts: []runner{p.web}})
	return l
}

// run is serve: it opens the storage, builds every component (New does no
// I/O) and runs them in the lifecycle's order until ctx ends.
func (o *serveOptions) run(ctx context.Context, g *globals) (err error) {
	if o.obsCfg.Addr == "" && !o.withConntrack && !o.withNftables && len(o.envoyFiles) == 0 {
		return errors.New("no flow source: give --hubble ADDR, --envoy-file, --conntrack or --nftables")
	}
	if (o.httpCfg.TLSCert == "") != (o.httpCfg.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.httpCfg.BearerToken, err = readToken(o.tokenFile); err != nil {
		return err
	}
	if o.obsCfg.Shard, err = hubble.ParseShard(o.shardIn); err != nil {
		return fmt.Errorf("--shard: %w", err)
	}
	if o.sinceIn != "" {
		if o.obsCfg.Since, err = parseWhen(o.sinceIn, time.Now(), "--hubble-since"); err != nil {
			return err
		}
	}
	st, err := openStorage(ctx, g, false)
	if err != nil {
		return err
	}
	defer st.Close()
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	plan, err := o.plan(ctx, g, st, func(c func()) { closers = append(closers, c) })
	if err != nil {
		return err
	}
	return plan.lifecycle().Run(ctx)
}

// plan builds serve's components and wires them: flows from the sources
// (attributed from the identity cache Hubble teaches) to the writer and the
// detectors, counter samples to their store and the drop-rate detector,
// findings to their store and Alertmanager.
func (o *serveOptions) plan(ctx context.Context, g *globals, st *clickhouse.Storage, onClose func(func())) (*servePlan, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newBuildInfoCollector())
	if o.wcfg.SpoolDir == "" && !o.noSpool {
		o.wcfg.SpoolDir = filepath.Join(g.dataDir, "spool")
	}
	wmetrics := clickhouse.NewWriterMetrics(reg)
	w, err := clickhouse.NewWriter(o.wcfg, st.DSN, wmetrics, g.log)
	if err != nil {
		return nil, err
	}
	plan := &servePlan{openWriter: w.Open, writer: w, log: g.log, flushed: func() {
		g.log.Info("writer flushed", "flows_written_since_start", int64(counterVecSum(wmetrics.Written)), "flows_dropped", int64(counterValue(wmetrics.Dropped)))
	}}
	if st.Server != nil {
		plan.database = st.Server
	}
	hubbleStats, envoyStats := &ingest.Stats{}, &ingest.Stats{}
	reg.MustRegister(ingest.NewStatsCollector(map[string]*ingest.Stats{"hubble": hubbleStats, "envoy": envoyStats}))

	det, err := o.detection(ctx, g, st, reg, w)
	if err != nil {
		return nil, err
	}
	plan.findings, plan.detectors = det.runners, det.clock

	// Hubble teaches the identity cache; Envoy and conntrack flows are
	// attributed from it.
	identities := ingest.NewIdentityCache(10*time.Minute, 0)
	attributed := ingest.Enrich(identities, det.flows)
	var obs *hubble.Observer // nil without --hubble
	if o.obsCfg.Addr != "" {
		if obs, err = hubble.NewObserver(o.obsCfg, ingest.Fanout{identities, det.flows}, hubbleStats, g.log); err != nil {
			return nil, err
		}
		plan.sources = append(plan.sources, obs)
	}
	refreshes, httpSrv, err := o.web(ctx, g, st, reg, w, obs, hubbleStats, det.eng, onClose)
	if err != nil {
		return nil, err
	}
	plan.web = runFunc(httpSrv.Serve)
	plan.sources = append(plan.sources, refreshes...)
	followers, err := o.envoyFollowers(g, attributed, envoyStats)
	if err != nil {
		return nil, err
	}
	plan.sources = append(plan.sources, followers...)
	host, err := o.hostPollers(g, attributed, det.counters, onClose)
	if err != nil {
		return nil, err
	}
	plan.sources = append(plan.sources, host...)
	// Once the writer's spool is open: resume after what is durable.
	plan.startSources = func(ctx context.Context) error {
		if obs != nil && o.resume {
			var owns func(string) bool // this replica's share (--shard)
			if o.obsCfg.Shard.Sharded() {
				owns = o.obsCfg.Shard.Owns
			}
			at, until, keys, err := w.ResumePointOf(ctx, st.Conn, "hubble", owns)
			if err != nil {
				return err
			}
			if at.After(o.obsCfg.Since) && obs.ResumeThrough(at, until, keys) {
				g.log.Info("resuming the Hubble stream after the newest durable flow", "since", at, "already_held_at_that_time", len(keys))
			}
		}
		return nil
	}
	plan.startWeb = func(context.Context) error {
		if err := httpSrv.Listen(); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		g.log.Info("serving", "listen", httpSrv.Addr().String(), "hubble", cmp.Or(o.obsCfg.Addr, "none"), "clickhouse", clickhouse.RedactDSN(st.DSN))
		return nil
	}
	return plan, nil
}

// detection is where flows, counter samples and findings go.
type detection struct {
	flows    ingest.Sink        // the writer, and the detectors with --detect
	counters ingest.CounterSink // nft_counters, and the drop-rate detector with --detect
	eng      *analyze.Engine    // nil without --detect
	runners  []runner           // findings store, Alertmanager sender
	clock    []runner           // the engine's wall clock
}

// detection builds the detectors and where their findings go: the findings
// table and, when configured, Alertmanager. Detectors see every flow the
// writer stores.
func (o *serveOptions) detection(ctx context.Context, g *globals, st *clickhouse.Storage, reg *prometheus.Registry, w *clickhouse.Writer) (*detection, error) {
	counters := clickhouse.NewCounterStore(st.Conn)
	d := &detection{flows: w, counters: counters}
	store := clickhouse.NewFindingStore(st.Conn, reg, g.log)
	if !o.detect {
		return d, nil
	}
	findingSinks := analyze.Fanout{store}
	d.runners = append(d.runners, store)
	if len(o.amCfg.Alertmanagers) > 0 {
		sender, err := alerting.New(o.amCfg, alerting.NewMetrics(reg), g.log)
		if err != nil {
			return nil, err
		}
		findingSinks = append(findingSinks, sender)
		d.runners = append(d.runners, sender)
	}
	detectorMetrics := analyze.NewMetrics(reg)
	dcfg, err := detectorConfig(ctx, g, o.currentDir, o.strictMTLS)
	if err != nil {
		return nil, err
	}
	// Detectors name the flows behind a finding; the storage package
	// writes its SQL before the store and Alertmanager see it.
	rendered := withQuery(findingSinks)
	if d.eng, err = analyze.NewEngine(dcfg, rendered, detectorMetrics); err != nil {
		return nil, err
	}
	dropRate, err := analyze.NewDropRate(analyze.DefaultDropRateConfig(), rendered, detectorMetrics)
	if err != nil {
		return nil, err
	}
	d.flows = ingest.Fanout{w, d.eng}
	d.counters = ingest.CounterFanout{dropRate, counters}
	// The engine closes windows on its own wall clock, whatever the
	// sources (Hubble, Envoy files, conntrack).
	d.clock = []runner{d.eng}
	return d, nil
}

// web is the HTTP server (the page, /metrics, /healthz, /readyz, /livez)
// and the refreshes of the policies in force (sources of the page and of
// plaintext-in-mesh).
func (o *serveOptions) web(ctx context.Context, g *globals, st *clickhouse.Storage, reg *prometheus.Registry, w *clickhouse.Writer, obs *hubble.Observer, hubbleStats *ingest.Stats, eng *analyze.Engine, onClose func(func())) ([]runner, *webui.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// /healthz: not ok while flows cannot be stored; /readyz: also
	// while ClickHouse or the Hubble stream is not there.
	health := &webui.Health{}
	health.Check("storage", func(context.Context) error { return w.Failure() })
	health.Ready("clickhouse", func(ctx context.Context) error { return st.Conn.Ping(ctx) })
	if obs != nil {
		health.Ready("hubble", obs.Connected)
	}
	health.Info(func() map[string]any {
		s := hubbleStats.Snapshot()
		connects, last := 0, time.Time{}
		if obs != nil {
			connects, last = obs.Connects(), obs.LastFlowTime()
		}
		return map[string]any{"hubble_connects": connects, "last_flow_time": last,
			"flows_read": s.Read, "flows_accepted": s.Accepted, "flows_rejected": s.RejectedTotal()}
	})
	mux.Handle("GET /healthz", health.Healthz())
	mux.Handle("GET /readyz", health.Readyz())
	mux.Handle("GET /livez", health.Livez())
	httpSrv, err := webui.NewServer(o.httpCfg, mux, g.log)
	if err != nil {
		return nil, nil, fmt.Errorf("--listen: %w", err)
	}
	if exposed, protection := httpSrv.Exposed(); exposed && protection == "" {
		g.log.Warn("--listen is reachable from other machines and nothing protects it: anyone who reaches it reads the service map, findings and their SQL (and /metrics); give --auth-token-file or --tls-client-ca, or listen on 127.0.0.1", "listen", o.httpCfg.Listen)
	} else if exposed {
		g.log.Info("--listen is reachable from other machines", "listen", o.httpCfg.Listen, "protected_by", protection)
	}
	var current []networkingv1.NetworkPolicy
	if o.currentDir != "" {
		if current, err = loadPolicies(ctx, g, o.currentDir); err != nil {
			if o.currentDir != fromCluster {
				return nil, nil, err
			}
			// The API server may be out of reach for a while; the page
			// diffs against no policies until a refresh gets them.
			g.log.Warn("policies in force: listing failed; retrying every --current-refresh", "err", err)
		}
	}
	// The page only reads: it logs in as the read-only user.
	pageConn, err := st.OpenReader(ctx)
	if err != nil {
		return nil, nil, err
	}
	onClose(func() { pageConn.Close() })
	pageCfg := webui.Config{Current: current}
	if eng != nil {
		pageCfg.MTLSCoverage = eng.MTLSCoverage
	}
	pageH := newPage(pageCfg, o.policyCfg, o.allowFlagged, clickhouse.NewReader(pageConn), g.log)
	if o.page {
		mux.Handle("GET /{$}", pageH)
	}
	var out []runner
	if o.currentDir == fromCluster && o.currentEvery > 0 {
		out = append(out, runFunc(func(ctx context.Context) error { refreshPolicies(ctx, g, pageH, o.currentEvery); return nil }))
		if eng != nil {
			out = append(out, runFunc(func(ctx context.Context) error { refreshPeerAuthentications(ctx, g, eng, o.currentEvery); return nil }))
		}
	}
	return out, httpSrv, nil
}

// envoyFollowers follow the --envoy-file access logs, one follower a file.
func (o *serveOptions) envoyFollowers(g *globals, sink ingest.Sink, stats *ingest.Stats) ([]runner, error) {
	if len(o.envoyFiles) == 0 {
		return nil, nil
	}
	// Where each access log was read to is kept in the data directory, so
	// a restart reads what was written meanwhile.
	if err := os.MkdirAll(g.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	positions, err := envoy.OpenPositions(filepath.Join(g.dataDir, envoy.PositionsFile))
	if err != nil {
		return nil, err
	}
	var out []runner
	followed := map[string]bool{}
	for _, f := range o.envoyFiles {
		if abs, err := filepath.Abs(f); err == nil {
			f = abs
		}
		if followed[f] {
			continue // named twice: one follower (two would read every line twice)
		}
		followed[f] = true
		fo, err := envoy.NewFollower(envoy.FollowConfig{Path: f, Positions: positions, Window: o.obsCfg.Window}, sink, stats)
		if err != nil {
			return nil, fmt.Errorf("--envoy-file: %w", err)
		}
		out = append(out, fo)
	}
	return out, nil
}

// hostPollers are the --conntrack and --nftables pollers of this node (or
// of --netns); their sockets are opened here and closed by onClose.
func (o *serveOptions) hostPollers(g *globals, flows ingest.Sink, counters ingest.CounterSink, onClose func(func())) ([]runner, error) {
	if !o.withConntrack && !o.withNftables {
		return nil, nil
	}
	host := &o.host
	if err := host.open(); err != nil {
		return nil, err
	}
	onClose(host.close)
	var out []runner
	if o.withConntrack {
		p, err := o.conntrackPoller(g, flows, onClose)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if o.withNftables {
		nft, err := nftlib.New(host.nftOptions()...)
		if err != nil {
			return nil, fmt.Errorf("--nftables needs CAP_NET_ADMIN: %w", err)
		}
		if o.restoreHostFW {
			restoreHostFirewall(g, nft)
		}
		p, err := nftables.New(nftables.Config{Node: host.node, Interval: host.nftInterval}, nft, counters, g.log)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (o *serveOptions) conntrackPoller(g *globals, flows ingest.Sink, onClose func(func())) (*conntrack.Poller, error) {
	host := &o.host
	ctConn, err := ctpkg.Dial(host.netlinkConfig())
	if err != nil {
		return nil, fmt.Errorf("--conntrack needs CAP_NET_ADMIN: %w", err)
	}
	onClose(func() { ctConn.Close() })
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
	cfg := conntrack.Config{Node: host.node, Interval: host.ctInterval, Report: host.ctReport,
		LocalAddresses: func() ([]netip.Addr, error) { return conntrack.InterfaceAddresses(host.nsFD) }}
	return conntrack.New(cfg, ctConn, events, flows, g.log)
}

// restoreHostFirewall loads the host firewall last confirmed with enforce
// --host --apply when table inet flowwarden is missing, as after a reboot.
// A failure is logged: the node stays as it is; serving the sources
// matters more.
func restoreHostFirewall(g *globals, nft *nftlib.Conn) {
	kept := filepath.Join(g.dataDir, hostfw.ConfirmedFile)
	outcome, at, err := hostfw.RestoreIfMissing(nft, kept)
	switch {
	case err != nil:
		g.log.Error("host firewall: could not restore the confirmed ruleset", "file", kept, "err", err)
	case outcome == hostfw.Restored:
		g.log.Warn("host firewall: table inet flowwarden was gone after a reboot; restored the ruleset confirmed earlier", "file", kept, "confirmed_at", at)
	case outcome == hostfw.RemovedThisBoot:
		g.log.Warn("host firewall: table inet flowwarden was removed during this boot; left off (it comes back after a reboot unless "+kept+" is deleted)", "confirmed_at", at)
	}
}

func (o *serveOptions) flags(f *pflag.FlagSet) {
	policyFlags(f, &o.policyCfg)
	allowFlaggedFlag(f, &o.allowFlagged)
	f.StringVar(&o.httpCfg.Listen, "listen", "127.0.0.1:9965", "HTTP address for the page (/), /metrics, /healthz, /readyz and /livez (all read-only); a non-loopback address without --auth-token-file or --tls-client-ca is warned about")
	f.BoolVar(&o.page, "page", true, "serve the page on / (false: only /metrics, /healthz, /readyz and /livez, as the node agent does)")
	f.IntVar(&o.httpCfg.MaxConns, "max-connections", 256, "most connections the HTTP server holds open at once (more wait in the kernel's queue, holding no descriptor); idle ones are closed after 30 s, at once when three quarters are in use")
	f.StringVar(&o.tokenFile, "auth-token-file", "", "require \"Authorization: Bearer <token>\" for the page and /metrics, the token read from this file (or from $FLOWWARDEN_AUTH_TOKEN); /healthz, /readyz and /livez stay open for probes")
	f.StringVar(&o.httpCfg.ClientCA, "tls-client-ca", "", "with --tls-cert: require a client certificate signed by this CA (PEM) for the page and /metrics (mTLS); /healthz, /readyz and /livez stay open for probes")
	f.StringVar(&o.httpCfg.TLSCert, "tls-cert", "", "serve the page, /metrics, /healthz, /readyz and /livez over TLS with this certificate")
	f.StringVar(&o.currentDir, "current-policies", "", "the NetworkPolicies in force, for the page's semantic diff: a directory, or \"cluster\" (listed from the API server every --current-refresh); the PeerAuthentications there (from the cluster: listed again every --current-refresh) tell plaintext-in-mesh which workloads must use mutual TLS")
	f.StringArrayVar(&o.strictMTLS, "strict-mtls-namespace", nil, "a namespace whose inbound requests must all use mutual TLS, whatever its PeerAuthentications say (repeatable)")
	f.DurationVar(&o.currentEvery, "current-refresh", 5*time.Minute, "with --current-policies cluster: how often the policies in force are listed again")
	f.StringVar(&o.httpCfg.TLSKey, "tls-key", "", "key of --tls-cert")
	f.StringVar(&o.obsCfg.Addr, "hubble", "", "Hubble Relay or agent observer address (host:port)")
	f.StringArrayVar(&o.envoyFiles, "envoy-file", nil, "follow this Istio/Envoy access log like tail -F (repeatable); how far it was read is kept in --data-dir, so a restart reads what was written meanwhile")
	f.BoolVar(&o.withConntrack, "conntrack", false, "read this node's conntrack table (needs CAP_NET_ADMIN)")
	f.BoolVar(&o.withNftables, "nftables", false, "poll this node's nftables counters into nft_counters (needs CAP_NET_ADMIN)")
	f.BoolVar(&o.restoreHostFW, "restore-host-firewall", true, "with --nftables: at start, load the host firewall last confirmed with enforce --host --apply (kept under --data-dir) when table inet flowwarden is missing, as after a reboot")
	o.host.flags(f)
	addTLSFlags(f, "hubble-", &o.obsCfg.TLS, false)
	f.StringVar(&o.sinceIn, "hubble-since", "", "on first start, also fetch flows this far back (1h, 2d) or from this time (RFC 3339)")
	f.StringVar(&o.shardIn, "shard", "", "i/N: this replica takes share i (0..N-1) of the Hubble flows, selected by GetFlows filters that Relay applies: the flows opened from namespaces that hash to it (FNV-1a) for i >= 1, flows opened outside any namespace for 0 (which owns no namespace, so N=2 does not split the namespaced flows: use 3 or more); N replicas with 0/N..N-1/N store every flow once (default: all, as 0/1); i may be a StatefulSet pod name (its ordinal)")
	f.DurationVar(&o.obsCfg.ShardRefresh, "shard-refresh", hubble.DefaultShardRefresh, "with --shard: how often the namespaces are listed from Relay; a change subscribes again from the resume point")
	f.BoolVar(&o.resume, "resume", true, "resume after the newest Hubble flow already stored (unless it is beyond --max-clock-skew)")
	f.DurationVar(&o.obsCfg.Window.MaxSkew, "max-clock-skew", ingest.DefaultMaxSkew, "reject flows dated more than this ahead of this host's clock, and never resume after such a time (negative: no limit)")
	f.DurationVar(&o.obsCfg.Window.MaxAge, "max-flow-age", 0, "reject live flows older than this (0: none; a replayed recording keeps its old times)")
	f.BoolVar(&o.detect, "detect", true, "run the detectors on the stream and store their findings")
	f.StringArrayVar(&o.amCfg.Alertmanagers, "alertmanager", nil, "Alertmanager base URL to send findings to (repeatable, e.g. an HA pair)")
	f.StringVar(&o.amCfg.Cluster, "cluster", "", "value of the cluster label on alerts")
	f.DurationVar(&o.amCfg.ResendInterval, "alert-resend-interval", 30*time.Second, "how often firing alerts are re-sent")
	f.IntVar(&o.wcfg.BatchSize, "batch-size", o.wcfg.BatchSize, "rows per ClickHouse insert")
	f.StringVar(&o.wcfg.SpoolDir, "spool-dir", "", "on-disk spool that makes accepted flows durable until inserted (default <data-dir>/spool)")
	f.BoolVar(&o.noSpool, "no-spool", false, "insert from memory only (an outage longer than the queue slows the source; a crash loses what is queued)")
	f.Int64Var(&o.wcfg.SpoolMaxBytes, "spool-max-bytes", o.wcfg.SpoolMaxBytes, "spool size cap; at the cap the sources are slowed")
	f.BoolVar(&o.wcfg.SpoolFsync, "spool-fsync", o.wcfg.SpoolFsync, "fsync every spool append")
	f.DurationVar(&o.wcfg.FlushInterval, "flush-interval", o.wcfg.FlushInterval, "longest wait before a partial batch is inserted")
}

// refreshPolicies lists the policies in force again every interval until
// ctx ends; a failed listing keeps the previous ones.
func refreshPolicies(ctx context.Context, g *globals, page *webui.Handler, every time.Duration) {
	refreshEvery(ctx, g, every, "policies in force: listing failed; keeping the previous ones", func(ctx context.Context) error {
		nps, err := loadPolicies(ctx, g, fromCluster)
		if err == nil {
			page.SetCurrent(nps)
		}
		return err
	})
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
// The edges the stored findings of the window flag are held back, unless
// allowFlagged.
func newPage(cfg webui.Config, policies enforcer.Config, allowFlagged bool, store webui.Store, log *slog.Logger) *webui.Handler {
	cfg.Recommend = func(graph *enforcer.Graph, flagged []schema.Finding) (*enforcer.Result, error) {
		c := policies
		if !allowFlagged {
			c.Flagged = flagged
		}
		return enforcer.Recommend(graph, c)
	}
	return webui.New(cfg, store, log)
}
