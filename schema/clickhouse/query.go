package clickhouse

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema"
)

// QueryLimits bound an ad-hoc forensic query.
type QueryLimits struct {
	MaxExecutionTime time.Duration
	MaxResultRows    uint64
	MaxMemoryBytes   uint64
}

// DefaultQueryLimits: 60 s, 100,000 rows, 4 GiB.
func DefaultQueryLimits() QueryLimits {
	return QueryLimits{MaxExecutionTime: 60 * time.Second, MaxResultRows: 100000, MaxMemoryBytes: 4 << 30}
}

// Result is a query's columns and rows, values as the driver scans them.
type Result struct {
	Columns []string
	Types   []string
	Rows    [][]any
}

var readOnlyKeywords = map[string]bool{"SELECT": true, "WITH": true, "SHOW": true, "DESCRIBE": true, "DESC": true, "EXPLAIN": true, "EXISTS": true}

// CheckReadOnly rejects anything but a single read-only statement. It is the
// first line of defence; the server-side readonly=1 setting is the second.
func CheckReadOnly(sql string) error {
	s := stripComments(sql)
	s = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(s), ";"))
	if s == "" {
		return fmt.Errorf("empty query")
	}
	if strings.Contains(s, ";") && hasSecondStatement(s) {
		return fmt.Errorf("one statement at a time: %w", ErrNotReadOnly)
	}
	word := strings.TrimLeft(s, "( \t\r\n")
	if i := strings.IndexAny(word, " \t\r\n("); i >= 0 {
		word = word[:i]
	}
	if !readOnlyKeywords[strings.ToUpper(word)] {
		return fmt.Errorf("%q: %w", word, ErrNotReadOnly)
	}
	return nil
}

// hasSecondStatement reports a semicolon outside string literals.
func hasSecondStatement(s string) bool {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
		case c == ';':
			return strings.TrimSpace(s[i+1:]) != ""
		}
	}
	return false
}

func stripComments(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		switch {
		case strings.HasPrefix(s, "--"):
			if i := strings.IndexByte(s, '\n'); i >= 0 {
				s = s[i:]
			} else {
				s = ""
			}
		case strings.HasPrefix(s, "/*"):
			if i := strings.Index(s, "*/"); i >= 0 {
				s = s[i+2:]
			} else {
				s = ""
			}
		default:
			b.WriteByte(s[0])
			s = s[1:]
		}
	}
	return b.String()
}

// Query runs a read-only statement with limits. The server enforces
// readonly=1, so even a statement that slips past CheckReadOnly cannot write.
func Query(ctx context.Context, conn driver.Conn, sql string, lim QueryLimits) (*Result, error) {
	if err := CheckReadOnly(sql); err != nil {
		return nil, err
	}
	settings := ch.Settings{
		"max_execution_time":   int(lim.MaxExecutionTime.Seconds()),
		"max_result_rows":      lim.MaxResultRows,
		"result_overflow_mode": "throw",
		"max_memory_usage":     lim.MaxMemoryBytes,
		"readonly":             1,
	}
	rows, err := conn.Query(ch.Context(ctx, ch.WithSettings(settings)), sql)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	res := &Result{Columns: rows.Columns()}
	types := rows.ColumnTypes()
	for _, ct := range types {
		res.Types = append(res.Types, ct.DatabaseTypeName())
	}
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("query: scan: %w", err)
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			row[i] = reflect.ValueOf(d).Elem().Interface()
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return res, nil
}

// LastFlowTime returns the time of the newest stored flow of a source (zero
// when there is none).
func LastFlowTime(ctx context.Context, conn driver.Conn, source string) (time.Time, error) {
	var t time.Time
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT max(time), count() FROM flows WHERE source = ?", source).Scan(&t, &n); err != nil {
		return time.Time{}, fmt.Errorf("newest stored %s flow: %w", source, err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return t, nil
}

// EachFlow streams the stored flows since a time, oldest first, with the
// fields the enforcer needs.
func EachFlow(ctx context.Context, conn driver.Conn, since time.Time, fn func(*schema.Flow)) error {
	rows, err := conn.Query(ctx, `SELECT time, node, source, verdict, direction, is_reply, protocol, src_ip, dst_ip, src_port, dst_port,
		src_namespace, src_pod, src_workload, src_workload_kind, src_labels,
		dst_namespace, dst_pod, dst_workload, dst_workload_kind, dst_labels, dst_names
		FROM flows WHERE time >= ? ORDER BY time`, since)
	if err != nil {
		return fmt.Errorf("read flows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f schema.Flow
		var verdict, source, direction string
		var srcIP, dstIP net.IP
		if err := rows.Scan(&f.Time, &f.Node, &source, &verdict, &direction, &f.IsReply, &f.Protocol, &srcIP, &dstIP, &f.SrcPort, &f.DstPort,
			&f.Src.Namespace, &f.Src.Pod, &f.Src.Workload, &f.Src.WorkloadKind, &f.Src.Labels,
			&f.Dst.Namespace, &f.Dst.Pod, &f.Dst.Workload, &f.Dst.WorkloadKind, &f.Dst.Labels, &f.DstNames); err != nil {
			return fmt.Errorf("read flows: %w", err)
		}
		f.Verdict, f.Source, f.Direction = schema.Verdict(verdict), schema.SourceKind(source), schema.Direction(direction)
		f.SrcIP, _ = netip.AddrFromSlice(srcIP)
		f.DstIP, _ = netip.AddrFromSlice(dstIP)
		f.SrcIP, f.DstIP = f.SrcIP.Unmap(), f.DstIP.Unmap()
		fn(&f)
	}
	return rows.Err()
}

// RuleUsage is the traffic one counted accept rule of the host firewall
// (table inet flowwarden) let in over a window, from its counter readings.
type RuleUsage struct {
	Node, Chain, Comment string
	Handle               uint64
	// Packets the rule matched in the window: the growth of its counter, or
	// its whole count when the rule first appeared inside the window (it
	// started at zero then).
	Packets     uint64
	First, Last time.Time // first and last reading
}

// HostRuleUsage reads, per node and rule, how much each counted accept rule
// of table inet flowwarden was used since a time (nft_counters, from serve
// --nftables). A rule replaced by a reload has a new handle and is a rule
// of its own.
func HostRuleUsage(ctx context.Context, conn driver.Conn, since time.Time) ([]RuleUsage, error) {
	rows, err := conn.Query(ctx, "SELECT node, chain, handle, argMax(comment, time),\n"+
		"       if(min(time) > fromUnixTimestamp64Milli(toInt64(?), 'UTC') + INTERVAL 1 MINUTE, max(packets), max(packets) - min(packets)),\n"+
		"       min(time), max(time)\n"+
		"FROM nft_counters\n"+
		"WHERE family = 'inet' AND `table` = 'flowwarden' AND chain != '' AND NOT drop AND time >= fromUnixTimestamp64Milli(toInt64(?), 'UTC')\n"+
		"GROUP BY node, chain, handle ORDER BY node, chain, handle", since.UnixMilli(), since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("read host rule counters: %w", err)
	}
	defer rows.Close()
	var out []RuleUsage
	for rows.Next() {
		var u RuleUsage
		if err := rows.Scan(&u.Node, &u.Chain, &u.Handle, &u.Comment, &u.Packets, &u.First, &u.Last); err != nil {
			return nil, fmt.Errorf("read host rule counters: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
