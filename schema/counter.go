package schema

import "time"

// CounterSample is one reading of one nftables counter on one node: a named
// counter object, or the anonymous counter of a rule (with its chain, handle
// and comment). Rates are differences between readings.
type CounterSample struct {
	Time    time.Time
	Node    string
	Family  string
	Table   string
	Chain   string // empty for named counters
	Handle  uint64 // rule handle; 0 for named counters
	Name    string // named counter's name; empty for rule counters
	Comment string // rule comment
	// Drop says the rule's verdict is drop (for drop-rate detection).
	Drop    bool
	Packets uint64
	Bytes   uint64
}
