// Package alerting sends findings to Prometheus Alertmanager, as Prometheus
// does with its alerts: every active finding is re-sent on an interval with
// an endsAt a few intervals ahead, a resolved one is sent once more with
// endsAt = now, and nothing is dropped while an Alertmanager is unreachable.
package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-openapi/strfmt"
	amclient "github.com/prometheus/alertmanager/api/v2/client"
	"github.com/prometheus/alertmanager/api/v2/client/alert"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowwarden/flowwarden/schema"
)

// Config configures the sender.
type Config struct {
	// Alertmanagers are base URLs (http://host:9093); an HA pair is two.
	Alertmanagers []string
	// Cluster is the value of the cluster label.
	Cluster string
	// RunbookURL is the base of runbook_url; the detector name is appended as a fragment.
	RunbookURL string
	// ResendInterval is how often active alerts are re-sent (default 30 s).
	ResendInterval time.Duration
	// Timeout bounds one POST (default 10 s).
	Timeout time.Duration
	// MinSeverity is the lowest severity sent (default warning).
	MinSeverity schema.Severity
}

func (c *Config) validate() error {
	if len(c.Alertmanagers) == 0 {
		return errors.New("alerting: no Alertmanager URL")
	}
	for i, u := range c.Alertmanagers {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			// Not echoed: a mistyped URL may hold a password.
			return fmt.Errorf("alerting: Alertmanager URL %d of %d is not an http(s) URL", i+1, len(c.Alertmanagers))
		}
		if p.User != nil {
			// They would not be sent, and the URL labels metrics and logs.
			return fmt.Errorf("alerting: %s: credentials in the Alertmanager URL are not supported", p.Redacted())
		}
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = 30 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MinSeverity == "" {
		c.MinSeverity = schema.SeverityWarning
	}
	if c.RunbookURL == "" {
		c.RunbookURL = DefaultRunbookURL
	}
	return nil
}

// DefaultRunbookURL is flowwarden's runbook, with a section per detector.
const DefaultRunbookURL = "https://github.com/flowwarden/flowwarden/blob/main/deploy/RUNBOOK.md"

// Metrics of the sender.
type Metrics struct {
	Sent   *prometheus.CounterVec
	Failed *prometheus.CounterVec
	Active prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_alerts_sent_total",
			Help: "Alerts delivered to an Alertmanager (each re-send counts)."}, []string{"alertmanager"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowwarden_alerts_send_failures_total",
			Help: "Failed POSTs to an Alertmanager (retried)."}, []string{"alertmanager"}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowwarden_alerts_active",
			Help: "Alerts firing or resolved but not yet delivered everywhere."}),
	}
	if reg != nil {
		reg.MustRegister(m.Sent, m.Failed, m.Active)
	}
	return m
}

type target struct {
	url    string
	client *amclient.AlertmanagerAPI
}

type state struct {
	finding  schema.Finding
	resolved time.Time       // wall time it resolved; zero while firing
	pending  map[string]bool // Alertmanagers that still need the resolution
	// firedAt records when each Alertmanager got the alert firing. One that
	// was down for the whole incident gets it firing first and resolved only
	// two resend intervals later, so that it still notifies: a security
	// incident nobody heard of is not "resolved".
	firedAt map[string]time.Time
}

// Sender delivers findings to Alertmanager. Finding is safe to call from the
// flow path: it only records the change and wakes Run.
type Sender struct {
	cfg     Config
	metrics *Metrics
	log     *slog.Logger
	targets []target
	now     func() time.Time

	mu     sync.Mutex
	alerts map[string]*state
	wake   chan struct{}
	// delivered, when set, is told of every successful POST (for tests and
	// latency measurement).
	delivered func(ids []string, at time.Time)
}

// New validates the config; it does no I/O.
func New(cfg Config, metrics *Metrics, log *slog.Logger) (*Sender, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Sender{cfg: cfg, metrics: metrics, log: log.With("component", "alerting"), now: time.Now,
		alerts: map[string]*state{}, wake: make(chan struct{}, 1)}
	for _, raw := range cfg.Alertmanagers {
		u, _ := url.Parse(raw)
		tc := amclient.DefaultTransportConfig().WithHost(u.Host).WithSchemes([]string{u.Scheme}).
			WithBasePath(strings.TrimSuffix(u.Path, "/") + amclient.DefaultBasePath)
		s.targets = append(s.targets, target{url: raw, client: amclient.NewHTTPClientWithConfig(strfmt.Default, tc)})
		// Series from zero, so that rate() sees the first failure.
		metrics.Sent.WithLabelValues(raw)
		metrics.Failed.WithLabelValues(raw)
	}
	return s, nil
}

// OnDelivered registers a hook called after each successful POST.
func (s *Sender) OnDelivered(fn func(ids []string, at time.Time)) {
	s.mu.Lock()
	s.delivered = fn
	s.mu.Unlock()
}

// Finding records a finding's new state and wakes the sender.
func (s *Sender) Finding(f schema.Finding) {
	if f.Severity.Rank() < s.cfg.MinSeverity.Rank() {
		return
	}
	s.mu.Lock()
	st, ok := s.alerts[f.ID]
	if !ok {
		st = &state{firedAt: map[string]time.Time{}}
		s.alerts[f.ID] = st
	}
	st.finding = f
	if f.Status == schema.FindingResolved {
		st.resolved = s.now()
		st.pending = map[string]bool{}
		for _, t := range s.targets {
			st.pending[t.url] = true
		}
	} else {
		st.resolved = time.Time{}
		st.pending = nil
	}
	s.metrics.Active.Set(float64(len(s.alerts)))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run sends until ctx ends: at once on every change, and every
// ResendInterval. A failed Alertmanager is retried with backoff; its alerts
// wait in memory meanwhile.
func (s *Sender) Run(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.ResendInterval)
	defer tick.Stop()
	backoff := map[string]time.Duration{}
	retryAt := map[string]time.Time{}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-tick.C:
		case <-retry.C:
		}
		now := s.now()
		next := now.Add(time.Hour)
		for _, t := range s.targets {
			if until := retryAt[t.url]; now.Before(until) {
				next = minTime(next, until)
				continue
			}
			if err := s.sendTo(ctx, t); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				b := min(max(2*backoff[t.url], 200*time.Millisecond), s.cfg.ResendInterval)
				backoff[t.url] = b
				retryAt[t.url] = now.Add(b)
				next = minTime(next, retryAt[t.url])
				s.metrics.Failed.WithLabelValues(t.url).Inc()
				s.log.Warn("Alertmanager unreachable; will retry", "alertmanager", t.url, "retry_in", b, "err", err)
				continue
			}
			backoff[t.url] = 0
			delete(retryAt, t.url)
		}
		retry.Reset(max(next.Sub(s.now()), time.Millisecond))
	}
}

// sendTo posts every alert one Alertmanager still needs.
func (s *Sender) sendTo(ctx context.Context, t target) error {
	now := s.now()
	s.mu.Lock()
	var batch models.PostableAlerts
	var ids, firing []string
	for id, st := range s.alerts {
		switch {
		case st.resolved.IsZero():
			firing = append(firing, id)
			batch = append(batch, s.postable(st, now, false))
		case !st.pending[t.url]:
			continue
		case st.firedAt[t.url].IsZero():
			firing = append(firing, id)
			batch = append(batch, s.postable(st, now, false))
		case now.Sub(st.firedAt[t.url]) < 2*s.cfg.ResendInterval && st.firedAt[t.url].After(st.resolved):
			// Fired late; hold the resolution so Alertmanager notifies first.
			continue
		default:
			batch = append(batch, s.postable(st, now, true))
		}
		ids = append(ids, id)
	}
	hook := s.delivered
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if _, err := t.client.Alert.PostAlerts(alert.NewPostAlertsParamsWithContext(pctx).WithAlerts(batch)); err != nil {
		return err
	}
	s.metrics.Sent.WithLabelValues(t.url).Add(float64(len(batch)))
	s.mu.Lock()
	isFiring := map[string]bool{}
	for _, id := range firing {
		isFiring[id] = true
		if st := s.alerts[id]; st != nil && st.firedAt[t.url].IsZero() {
			st.firedAt[t.url] = now
		}
	}
	for _, id := range ids {
		st := s.alerts[id]
		if st == nil || st.resolved.IsZero() || isFiring[id] {
			continue
		}
		delete(st.pending, t.url)
		if len(st.pending) == 0 {
			delete(s.alerts, id)
		}
	}
	s.metrics.Active.Set(float64(len(s.alerts)))
	s.mu.Unlock()
	if hook != nil {
		hook(ids, s.now())
	}
	return nil
}

// postable renders an alert. A firing alert's endsAt is four resend
// intervals ahead, so Alertmanager resolves it by itself if flowwarden dies.
func (s *Sender) postable(st *state, now time.Time, resolved bool) *models.PostableAlert {
	f := st.finding
	labels := models.LabelSet{
		"alertname": AlertName(f.Detector),
		"severity":  string(f.Severity),
		"namespace": f.Namespace,
		"workload":  f.Workload,
		"detector":  f.Detector,
		"cluster":   s.cfg.Cluster,
	}
	if f.Peer != "" {
		labels["peer_namespace"] = f.Peer
	}
	for k, v := range labels {
		if v == "" {
			delete(labels, k)
		}
	}
	ends := now.Add(4 * s.cfg.ResendInterval)
	if resolved {
		ends = st.resolved
	}
	starts := f.Start
	if starts.After(ends) || starts.IsZero() {
		starts = ends
	}
	return &models.PostableAlert{
		Alert: models.Alert{Labels: labels},
		Annotations: models.LabelSet{
			"summary":     f.Summary,
			"description": Description(f),
			"query":       f.Query,
			"runbook_url": s.cfg.RunbookURL + "#" + f.Detector,
		},
		StartsAt: strfmt.DateTime(starts),
		EndsAt:   strfmt.DateTime(ends),
	}
}

// AlertName maps a detector to its alertname: "egress-spike" → "FlowwardenEgressSpike".
func AlertName(detector string) string {
	var b strings.Builder
	b.WriteString("Flowwarden")
	for _, part := range strings.Split(detector, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// Description renders a finding's evidence for humans.
func Description(f schema.Finding) string {
	e := f.Evidence
	var b strings.Builder
	fmt.Fprintf(&b, "%s from %s to %s (windows of %s). ", f.Summary, f.Start.UTC().Format(time.RFC3339), f.End.UTC().Format(time.RFC3339), e.Window)
	fmt.Fprintf(&b, "Observed %.4g %s against a baseline of %.4g (threshold %.4g); %d matching flows.", e.Observed, e.Metric, e.Baseline, e.Threshold, e.Flows)
	for i, sf := range e.Samples {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "\nexample: %s %s/%s → %s %s:%d %s %s", sf.Time.UTC().Format(time.RFC3339), sf.Src.Namespace, sf.Src.Pod,
			strings.Trim(sf.Dst.Namespace+"/"+sf.Dst.Pod, "/"), sf.DstIP, sf.DstPort, sf.Protocol, sf.Verdict)
	}
	return b.String()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
