package ingest

import "github.com/prometheus/client_golang/prometheus"

// StatsCollector exports the sources' Stats as Prometheus metrics.
type StatsCollector struct {
	sources  map[string]*Stats
	records  *prometheus.Desc
	rejected *prometheus.Desc
}

// NewStatsCollector returns one collector for the stats of every source
// (source name → stats): the metrics share their names, so one collector
// serves them all.
func NewStatsCollector(sources map[string]*Stats) *StatsCollector {
	return &StatsCollector{
		sources: sources,
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
	for source, stats := range c.sources {
		s := stats.Snapshot()
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Read), source, "read")
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Accepted), source, "accepted")
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.Skipped), source, "skipped")
		for reason, n := range s.Rejected {
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n), source, reason)
		}
	}
}
