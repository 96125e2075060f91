package schema

import "time"

// FlowSelector names a set of stored flows as data: the flows behind a
// finding or behind an allowed edge. The storage package renders it as a
// query (schema/clickhouse.FlowsSQL), so a component that needs to point a
// person at flows writes no SQL and knows no table. Zero fields select
// anything.
type FlowSelector struct {
	// From and To bound the flows' event time: From <= time < To.
	From, To time.Time
	// Src and Dst select the two ends by namespace and workload.
	Src, Dst EndpointSelector
	// DstPort selects the destination port (0: any).
	DstPort uint16
	// Verdict and Direction select one of each ("": any).
	Verdict   Verdict
	Direction Direction
	// Replies: nil selects requests and replies; false requests only
	// (the side that opened the connection); true replies only.
	Replies *bool
	// NewestFirst orders the flows newest first (default oldest first);
	// Limit caps how many (0: all).
	NewestFirst bool
	Limit       int
}

// EndpointSelector selects one end of a flow ("": any).
type EndpointSelector struct {
	Namespace, Workload string
}

// Requests is the Replies value that selects requests only.
func Requests() *bool { b := false; return &b }
