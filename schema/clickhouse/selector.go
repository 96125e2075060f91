package clickhouse

import (
	"strconv"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// FlowsSQL renders a flow selector as a query over the flows table
// returning columns (a comma-separated list of flows columns); values are
// quoted here, times formatted as DateTime64(9) in UTC.
func FlowsSQL(sel schema.FlowSelector, columns string) string {
	var where []string
	if !sel.From.IsZero() {
		where = append(where, "time >= "+timeLiteral(sel.From))
	}
	if !sel.To.IsZero() {
		where = append(where, "time < "+timeLiteral(sel.To))
	}
	for _, e := range []struct {
		side string
		sel  schema.EndpointSelector
	}{{"src", sel.Src}, {"dst", sel.Dst}} {
		if e.sel.Namespace != "" {
			where = append(where, e.side+"_namespace = "+QuoteString(e.sel.Namespace))
		}
		if e.sel.Workload != "" {
			where = append(where, e.side+"_workload = "+QuoteString(e.sel.Workload))
		}
	}
	if sel.DstPort != 0 {
		where = append(where, "dst_port = "+strconv.Itoa(int(sel.DstPort)))
	}
	if sel.Verdict != "" {
		where = append(where, "verdict = "+QuoteString(string(sel.Verdict)))
	}
	if sel.Direction != "" {
		where = append(where, "direction = "+QuoteString(string(sel.Direction)))
	}
	if sel.Replies != nil {
		if *sel.Replies {
			where = append(where, "is_reply")
		} else {
			where = append(where, "NOT is_reply")
		}
	}
	q := "SELECT " + columns + "\nFROM flows"
	if len(where) > 0 {
		q += "\nWHERE " + strings.Join(where, " AND ")
	}
	if sel.NewestFirst {
		q += "\nORDER BY time DESC"
	} else {
		q += "\nORDER BY time"
	}
	if sel.Limit > 0 {
		q += "\nLIMIT " + strconv.Itoa(sel.Limit)
	}
	return q
}

// timeLiteral is t as a DateTime64(9) literal in UTC.
func timeLiteral(t time.Time) string {
	return "toDateTime64(" + QuoteString(t.UTC().Format("2006-01-02 15:04:05.000000000")) + ", 9, 'UTC')"
}
