package analyze

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// DropRateDetector is the name of the nftables drop-spike detector.
const DropRateDetector = "nft-drop-spike"

// DropRateConfig tunes the drop-rule spike detector.
type DropRateConfig struct {
	// MinRate is the packets per second below which nothing fires.
	MinRate float64
	// Factor over the baseline rate that counts as a spike.
	Factor float64
	// Alpha is the EWMA weight of a new rate in the baseline.
	Alpha float64
	// WarmUp is how many rates are learned before the detector may fire.
	WarmUp int
}

// DefaultDropRateConfig fires at 4× the usual drop rate and at least 5
// packets/s, after three readings.
func DefaultDropRateConfig() DropRateConfig {
	return DropRateConfig{MinRate: 5, Factor: 4, Alpha: 0.2, WarmUp: 3}
}

// DropRate watches the counters of nftables drop rules (such as the final
// drop of the generated host firewall): per rule, the packet rate between
// two readings against an EWMA baseline of earlier rates. A finding opens
// when the rate crosses max(MinRate, Factor × baseline) and resolves at the
// first reading below. Counter resets (a reloaded ruleset) restart the rule.
type DropRate struct {
	cfg     DropRateConfig
	sink    FindingSink
	metrics *Metrics

	mu    sync.Mutex
	rules map[dropRuleKey]*dropRuleState
}

type dropRuleKey struct {
	node, family, table, chain string
	handle                     uint64
}

type dropRuleState struct {
	last     schema.CounterSample
	rates    int
	baseline float64
	open     *schema.Finding
}

// NewDropRate checks the configuration.
func NewDropRate(cfg DropRateConfig, sink FindingSink, m *Metrics) (*DropRate, error) {
	if cfg.Factor <= 1 || cfg.Alpha <= 0 || cfg.Alpha > 1 || cfg.MinRate < 0 || cfg.WarmUp < 1 {
		return nil, fmt.Errorf("drop-rate detector: bad configuration %+v (factor > 1, 0 < alpha ≤ 1, min rate ≥ 0, warm-up ≥ 1)", cfg)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &DropRate{cfg: cfg, sink: sink, metrics: m, rules: map[dropRuleKey]*dropRuleState{}}, nil
}

// WriteCounters is Observe as a counter sink (ingest.CounterSink), so the
// detector sits beside the counter store behind one fan-out. It never fails.
func (d *DropRate) WriteCounters(_ context.Context, samples []schema.CounterSample) error {
	d.Observe(samples)
	return nil
}

// Observe takes one reading of counters; only rule counters of drop rules
// are looked at.
func (d *DropRate) Observe(samples []schema.CounterSample) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range samples {
		if !s.Drop || s.Handle == 0 {
			continue
		}
		k := dropRuleKey{s.Node, s.Family, s.Table, s.Chain, s.Handle}
		st := d.rules[k]
		switch {
		case st == nil:
			d.rules[k] = &dropRuleState{last: s}
			continue
		case s.Packets < st.last.Packets: // the counter restarted: a reloaded rule
			if st.open != nil {
				d.resolve(st, s.Time)
			}
			d.rules[k] = &dropRuleState{last: s}
			continue
		case !s.Time.After(st.last.Time):
			continue
		}
		dt := s.Time.Sub(st.last.Time).Seconds()
		rate := float64(s.Packets-st.last.Packets) / dt
		threshold := max(d.cfg.MinRate, d.cfg.Factor*st.baseline)
		switch {
		case st.rates >= d.cfg.WarmUp && rate >= threshold:
			d.fire(st, s, rate, threshold)
		default:
			if st.open != nil {
				d.resolve(st, s.Time)
			}
			// Spikes do not raise the baseline; quiet readings teach it.
			if st.rates == 0 {
				st.baseline = rate
			} else {
				st.baseline += d.cfg.Alpha * (rate - st.baseline)
			}
			st.rates++
		}
		st.last = s
	}
}

func (d *DropRate) fire(st *dropRuleState, s schema.CounterSample, rate, threshold float64) {
	if st.open == nil {
		st.open = &schema.Finding{
			ID:       findingID(DropRateDetector, fmt.Sprintf("%s/%s/%s/%s/%d", s.Node, s.Family, s.Table, s.Chain, s.Handle)),
			Detector: DropRateDetector, Severity: schema.SeverityWarning,
			Workload: s.Node, Peer: s.Family + " " + s.Table + " " + s.Chain + " #" + strconv.FormatUint(s.Handle, 10),
			Start: st.last.Time, Status: schema.FindingOpen,
			Evidence: schema.Evidence{Metric: "dropped packets/s"},
		}
		d.metrics.Findings.WithLabelValues(DropRateDetector, string(schema.SeverityWarning)).Inc()
	}
	f := st.open
	f.End = s.Time
	f.Evidence.Window = s.Time.Sub(st.last.Time)
	f.Evidence.Observed = max(f.Evidence.Observed, rate)
	f.Evidence.Baseline, f.Evidence.Threshold = st.baseline, threshold
	f.Evidence.Flows += s.Packets - st.last.Packets // packets, for this detector
	f.Evidence.Bytes += s.Bytes - st.last.Bytes
	rule := s.Comment
	if rule == "" {
		rule = "#" + strconv.FormatUint(s.Handle, 10)
	}
	f.Summary = fmt.Sprintf("nftables drop rule %q (%s %s %s) on node %s drops %.1f packets/s, usually %.1f/s",
		rule, s.Family, s.Table, s.Chain, s.Node, rate, st.baseline)
	f.Counters = &schema.CounterSelector{From: f.Start.Add(-10 * time.Minute), To: s.Time.Add(time.Second),
		Node: s.Node, Family: s.Family, Table: s.Table, Chain: s.Chain, Handle: s.Handle}
	d.sink.Finding(*f)
}

func (d *DropRate) resolve(st *dropRuleState, at time.Time) {
	f := *st.open
	f.Status, f.End = schema.FindingResolved, at
	st.open = nil
	d.sink.Finding(f)
}
