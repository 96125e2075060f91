package schema

import "time"

// Severity of a finding, as Alertmanager routes it.
type Severity string

// Severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

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
	// Query is a ready-to-run SQL query over the flows table that returns
	// the flows behind the finding.
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
