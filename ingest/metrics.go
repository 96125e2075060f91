package ingest

import "github.com/prometheus/client_golang/prometheus"

// StatsCollector exports a source's Stats as Prometheus metrics.
type StatsCollector struct {
	source   string
	stats    *Stats
	records  *prometheus.Desc
	rejected *prometheus.Desc
}

// NewStatsCollector returns a collector for one source's stats.
func NewStatsCollector(source string, stats *Stats) *StatsCollector {
	return &StatsCollector{
		source: source, stats: stats,
		records: prometheus.NewDesc("flowwarden_ingest_records_total",
			"Input records by outcome: read, accepted (became a flow), skipped (well-formed, not a flow).",
			[]string{"source", "outcome"}, nil),
		rejected: prometheus.NewDesc("flowwarden_ingest_rejected_total",
			"Input records rejected as malformed, by reason.", []string{"source", "reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.rejected
}

// Collect implements prometheus.Collector.
func (c *StatsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats.Snapshot()
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Read), c.source, "read")
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Accepted), c.source, "accepted")
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Skipped), c.source, "skipped")
	for reason, n := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n), c.source, reason)
	}
}
