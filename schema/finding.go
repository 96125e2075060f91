package schema

import (
	"strings"
	"time"
)

// Severity of a finding, as Alertmanager routes it.
type Severity string

// Severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Rank orders severities: info < warning < critical (0 for unknown).
func (s Severity) Rank() int {
	switch s {
	case SeverityCritical:
		return 3
	case SeverityWarning:
		return 2
	case SeverityInfo:
		return 1
	}
	return 0
}

// FindingStatus says whether a finding's condition still holds.
type FindingStatus string

// Finding statuses.
const (
	FindingOpen     FindingStatus = "open"
	FindingResolved FindingStatus = "resolved"
)

// Finding is what a detector reports: one incident on one subject
// (workload or namespace pair), from its first window to its last.
type Finding struct {
	// ID is stable for the same detector and subject: the alert fingerprint.
	ID        string
	Detector  string
	Severity  Severity
	Namespace string
	Workload  string
	// Peer is the other side where the subject is a pair (the destination
	// namespace of a cross-namespace denial), else empty.
	Peer    string
	Summary string
	// Start is the start of the first window in which the condition held;
	// End the end of the last such window (event time, not wall time).
	Start, End time.Time
	Status     FindingStatus
	Evidence   Evidence
	// Flows names the flows behind the finding (Counters the nftables
	// counter readings, for a finding on counters); the storage package
	// renders it as Query.
	Flows    *FlowSelector
	Counters *CounterSelector
	// Query is a ready-to-run SQL query that returns what Flows or
	// Counters select: filled by the storage package
	// (schema/clickhouse.RenderQuery), never by a detector.
	Query string
}

// Evidence backs a finding with numbers and examples.
type Evidence struct {
	// Window is the detector's window length.
	Window time.Duration
	// Flows and Bytes count what matched in the finding's windows.
	Flows uint64
	Bytes uint64
	// Observed is the value that crossed the threshold in the worst window
	// (flows, bytes or a share, see Metric); Baseline what was expected;
	// Threshold the bound it crossed.
	Metric    string
	Observed  float64
	Baseline  float64
	Threshold float64
	// Samples are a few of the flows behind it.
	Samples []Flow
}

// FindingRecord is a finding as flowwarden prints and stores it.
type FindingRecord struct {
	ID        string         `json:"id"`
	Detector  string         `json:"detector"`
	Severity  string         `json:"severity"`
	Namespace string         `json:"namespace"`
	Workload  string         `json:"workload,omitempty"`
	Peer      string         `json:"peer,omitempty"`
	Summary   string         `json:"summary"`
	Start     time.Time      `json:"start"`
	End       time.Time      `json:"end"`
	Status    string         `json:"status"`
	Evidence  EvidenceRecord `json:"evidence"`
	Query     string         `json:"query"`
}

// EvidenceRecord is the evidence of a finding.
type EvidenceRecord struct {
	Window    string         `json:"window"`
	Flows     uint64         `json:"flows"`
	Bytes     uint64         `json:"bytes,omitempty"`
	Metric    string         `json:"metric"`
	Observed  float64        `json:"observed"`
	Baseline  float64        `json:"baseline"`
	Threshold float64        `json:"threshold"`
	Samples   []SampleRecord `json:"samples"`
}

// SampleRecord is one example flow behind a finding.
type SampleRecord struct {
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Dest     string    `json:"destination"`
	DstAddr  string    `json:"dst_addr"`
	DstPort  uint16    `json:"dst_port"`
	Protocol string    `json:"protocol"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"drop_reason,omitempty"`
	// Query is the DNS name asked, for DNS flows.
	Query string `json:"dns_query,omitempty"`
}

// Record converts a finding for output and storage.
func (f Finding) Record() FindingRecord {
	r := FindingRecord{ID: f.ID, Detector: f.Detector, Severity: string(f.Severity), Namespace: f.Namespace,
		Workload: f.Workload, Peer: f.Peer, Summary: f.Summary, Start: f.Start.UTC(), End: f.End.UTC(), Status: string(f.Status),
		Query: f.Query,
		Evidence: EvidenceRecord{Window: f.Evidence.Window.String(), Flows: f.Evidence.Flows, Bytes: f.Evidence.Bytes,
			Metric: f.Evidence.Metric, Observed: f.Evidence.Observed, Baseline: f.Evidence.Baseline, Threshold: f.Evidence.Threshold,
			Samples: []SampleRecord{}}}
	for _, s := range f.Evidence.Samples {
		r.Evidence.Samples = append(r.Evidence.Samples, SampleRecord{Time: s.Time.UTC(), Source: endpointName(s.Src), Dest: endpointName(s.Dst),
			DstAddr: s.DstIP.String(), DstPort: s.DstPort, Protocol: s.Protocol, Verdict: string(s.Verdict), Reason: s.DropReason,
			Query: s.DNSQuery})
	}
	return r
}

// Subject names what a finding is about, as the CLI and the page print
// it: namespace/workload (or the namespace alone), then "→ peer" for a
// pair.
func (f Finding) Subject() string { return subject(f.Namespace, f.Workload, f.Peer) }

// Subject is Finding.Subject of a record.
func (r FindingRecord) Subject() string { return subject(r.Namespace, r.Workload, r.Peer) }

func subject(namespace, workload, peer string) string {
	s := strings.Trim(namespace+"/"+workload, "/")
	if peer != "" {
		s += " → " + peer
	}
	return s
}

func endpointName(e Endpoint) string {
	switch {
	case e.Pod != "":
		return e.Namespace + "/" + e.Pod
	case e.Workload != "":
		return e.Workload
	}
	return ""
}
