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

// findingColumns and dnsColumns are what a finding's query shows.
const (
	findingColumns = "time, src_namespace, src_pod, src_workload, dst_namespace, dst_workload, dst_addr, dst_port, protocol, verdict, drop_reason, dst_names"
	dnsColumns     = "time, src_namespace, src_pod, src_workload, is_reply, dns_query, dns_qtype, dns_rcode, dst_addr, dst_port"
)

// RenderQuery fills a finding's Query from what it selects (its Flows or
// its Counters); a finding that selects nothing keeps its Query.
func RenderQuery(f *schema.Finding) {
	switch {
	case f.Flows != nil:
		f.Query = FindingSQL(*f.Flows)
	case f.Counters != nil:
		f.Query = CountersSQL(*f.Counters)
	}
}

// FindingSQL renders the flows behind a finding: a query over the flows
// table, one condition a line, oldest first.
func FindingSQL(sel schema.FlowSelector) string {
	where := []string{"time >= " + timeLiteral(sel.From), "time < " + timeLiteral(sel.To)}
	for _, c := range sel.Where {
		where = append(where, condSQL(c))
	}
	cols := findingColumns
	if sel.DNS {
		cols = dnsColumns
	}
	return "SELECT " + cols + "\nFROM flows\nWHERE " + strings.Join(where, "\n  AND ") + "\nORDER BY time"
}

// condSQL renders one condition.
func condSQL(c schema.Cond) string {
	var s string
	quoted := func() []string {
		out := make([]string, len(c.Values))
		for i, v := range c.Values {
			out[i] = QuoteString(v)
		}
		return out
	}
	switch {
	case c.Any != nil:
		alts := make([]string, len(c.Any))
		for i, conj := range c.Any {
			parts := make([]string, len(conj))
			for j, x := range conj {
				parts[j] = condSQL(x)
			}
			alts[i] = strings.Join(parts, " AND ")
		}
		s = "(" + strings.Join(alts, " OR ") + ")"
	case c.Op == schema.OpEq:
		s = c.Field + " = " + QuoteString(c.Values[0])
	case c.Op == schema.OpNumEq || c.Op == schema.OpNumGE:
		n, err := strconv.ParseInt(c.Values[0], 10, 64)
		if err != nil {
			s = "false" // not a number: selects nothing, never pasted into SQL
			break
		}
		op := " = "
		if c.Op == schema.OpNumGE {
			op = " >= "
		}
		s = c.Field + op + strconv.FormatInt(n, 10)
	case c.Op == schema.OpTrue:
		s = c.Field
	case c.Op == schema.OpIn:
		s = c.Field + " IN (" + strings.Join(quoted(), ", ") + ")"
	case c.Op == schema.OpAddrIn:
		addrs := quoted()
		for i := range addrs {
			addrs[i] = "toIPv6(" + addrs[i] + ")"
		}
		if len(addrs) == 1 {
			s = c.Field + " = " + addrs[0]
		} else {
			s = c.Field + " IN (" + strings.Join(addrs, ", ") + ")"
		}
	case c.Op == schema.OpHasAny:
		s = "hasAny(" + c.Field + ", [" + strings.Join(quoted(), ", ") + "])"
	case c.Op == schema.OpPrefix:
		s = "startsWith(" + c.Field + ", " + QuoteString(c.Values[0]) + ")"
	case c.Op == schema.OpInPrefix:
		s = "isIPAddressInRange(" + c.Field + ", " + QuoteString(c.Values[0]) + ")"
	case c.Op == schema.OpDNSUnder:
		s = "(position(lower(" + c.Field + "), " + QuoteString("."+c.Values[0]+".") + ") > 0 OR startsWith(lower(" + c.Field + "), " + QuoteString(c.Values[0]) + "))"
	default:
		s = "false" // an unknown operator selects nothing rather than everything
	}
	if c.Not {
		s = "NOT " + s
	}
	return s
}

// CountersSQL renders the readings of one nftables rule counter with the
// packets dropped since the previous reading.
func CountersSQL(sel schema.CounterSelector) string {
	where := []string{
		"node = " + QuoteString(sel.Node),
		"family = " + QuoteString(sel.Family),
		"`table` = " + QuoteString(sel.Table),
		"chain = " + QuoteString(sel.Chain),
		"handle = " + strconv.FormatUint(sel.Handle, 10),
		"time >= " + timeLiteral(sel.From),
		"time < " + timeLiteral(sel.To),
	}
	return "SELECT time, comment, packets, bytes,\n" +
		"       packets - lagInFrame(packets, 1, packets) OVER (ORDER BY time) AS dropped_since_last\n" +
		"FROM nft_counters\nWHERE " + strings.Join(where, "\n  AND ") + "\nORDER BY time"
}
