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
	// Where holds further conditions, all of which must hold, rendered in
	// order after the ones above.
	Where []Cond
	// DNS shows the DNS fields of the flows rather than their ends and
	// verdict (a finding's query).
	DNS bool
}

// EndpointSelector selects one end of a flow ("": any).
type EndpointSelector struct {
	Namespace, Workload string
}

// Requests is the Replies value that selects requests only.
func Requests() *bool { b := false; return &b }

// Fields a finding's selector names beyond the structured ones above: the
// columns of the flow record (DESIGN.md, "The flow record").
type (
	// Cond is one condition on a field of the flow record, or, with Any
	// set, a disjunction of conjunctions ((a AND b) OR c …); Not negates
	// it.
	Cond struct {
		Field  string
		Op     CondOp
		Values []string
		Any    [][]Cond
		Not    bool
	}
	// CondOp is how a condition compares its field with its values.
	CondOp string
)

// Condition operators.
const (
	OpEq       CondOp = "eq"        // the string field equals Values[0]
	OpNumEq    CondOp = "num-eq"    // the numeric field equals Values[0]
	OpNumGE    CondOp = "num-ge"    // the numeric field is at least Values[0]
	OpTrue     CondOp = "true"      // the boolean field is true
	OpIn       CondOp = "in"        // the string field is one of Values
	OpAddrIn   CondOp = "addr-in"   // the address field is one of Values (IP addresses)
	OpHasAny   CondOp = "has-any"   // the list field holds one of Values
	OpPrefix   CondOp = "prefix"    // the string field starts with Values[0]
	OpInPrefix CondOp = "in-prefix" // the address field is inside the CIDR Values[0]
	OpDNSUnder CondOp = "dns-under" // the name field is Values[0] or under it, any case
)

// Eq is the condition field = value.
func Eq(field, value string) Cond { return Cond{Field: field, Op: OpEq, Values: []string{value}} }

// IsTrue is the condition that a boolean field is true; IsFalse that it is not.
func IsTrue(field string) Cond  { return Cond{Field: field, Op: OpTrue} }
func IsFalse(field string) Cond { return Cond{Field: field, Op: OpTrue, Not: true} }

// AnyOf holds when one of the conjunctions holds.
func AnyOf(alternatives ...[]Cond) Cond { return Cond{Any: alternatives} }

// CounterSelector names the readings of one nftables rule counter.
type CounterSelector struct {
	From, To                   time.Time
	Node, Family, Table, Chain string
	Handle                     uint64
}
