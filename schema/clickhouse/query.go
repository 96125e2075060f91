package clickhouse

import (
	"cmp"
	"context"
	"errors"
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

// ErrOutsideDatabase is returned by Query for statements that call a
// function reaching files, programs or other hosts.
var ErrOutsideDatabase = errors.New("functions that read files or reach other hosts or programs (file, url, remote, s3, executable, …) are not allowed")

// outsideFunctions read the server's files, run programs or connect to
// other hosts. CheckReadOnly refuses them by name as a first line; the
// server is the second (the embedded one: the read-only user has no grant
// for any source, and a Landlock confinement refuses the scalar file(),
// which checks no grant).
var outsideFunctions = map[string]bool{
	"file": true, "filecluster": true, "url": true, "urlcluster": true, "remote": true, "remotesecure": true,
	"cluster": true, "clusterallreplicas": true, "s3": true, "s3cluster": true, "gcs": true, "oss": true, "cosn": true,
	"azureblobstorage": true, "azureblobstoragecluster": true, "hdfs": true, "hdfscluster": true, "executable": true,
	"executablepool": true, "mysql": true, "postgresql": true, "jdbc": true, "odbc": true, "sqlite": true, "mongodb": true,
	"redis": true, "input": true, "iceberg": true, "icebergs3": true, "icebergazure": true, "iceberghdfs": true,
	"iceberglocal": true, "deltalake": true, "deltalakelocal": true, "deltalakeazure": true, "hudi": true,
	"arrowflight": true, "ytsaurus": true, "catboostevaluate": true, "dictionary": true,
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
	if name := cmp.Or(callsOutside(s), callsOutside(sql)); name != "" {
		return fmt.Errorf("%s(): %w", name, ErrOutsideDatabase)
	}
	return nil
}

// callsOutside returns the first name of outsideFunctions called in s
// (comments already stripped), bare or quoted, in any case.
func callsOutside(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		var name string
		switch {
		case c == '\'':
			i = skipQuoted(s, i)
			continue
		case c == '`' || c == '"':
			end := skipQuoted(s, i)
			name = s[i+1 : max(i+1, end-1)]
			i = end
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			name, i = s[i:j], j
		default:
			i++
			continue
		}
		j := i
		for j < len(s) && strings.ContainsRune(" \t\r\n", rune(s[j])) {
			j++
		}
		if j < len(s) && s[j] == '(' && outsideFunctions[strings.ToLower(name)] {
			return name
		}
	}
	return ""
}

// skipQuoted returns the index after the quoted token starting at s[i].
func skipQuoted(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j + 1
		}
	}
	return len(s)
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

// OpenReader connects to the ClickHouse named by dsn to read: unlike Open
// it creates nothing (a read-only user could not), and it defaults the
// database the same way. Use it with a read-only user's DSN (the embedded
// server's ReaderDSN) for query and the other read paths.
func OpenReader(ctx context.Context, dsn string) (driver.Conn, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse ClickHouse DSN %s: %w", RedactDSN(dsn), err)
	}
	if opts.Auth.Database == "" {
		opts.Auth.Database = DefaultDatabase
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	return connect(ctx, dsn, opts)
}

// Query runs a read-only statement with limits. The server enforces
// readonly (readonly=1 for this query, unless the user's profile already
// pins it, as the embedded server's reader's does), so even a statement that
// slips past CheckReadOnly cannot write. The execution time limit is sent
// in fractional seconds: a limit under a second stays a limit.
func Query(ctx context.Context, conn driver.Conn, sql string, lim QueryLimits) (*Result, error) {
	if err := CheckReadOnly(sql); err != nil {
		return nil, err
	}
	if lim.MaxExecutionTime < 0 {
		return nil, fmt.Errorf("negative execution time limit %s", lim.MaxExecutionTime)
	}
	settings := ch.Settings{
		"max_execution_time":   lim.MaxExecutionTime.Seconds(),
		"max_result_rows":      lim.MaxResultRows,
		"result_overflow_mode": "throw",
		"max_memory_usage":     lim.MaxMemoryBytes,
	}
	// A profile with readonly ≥ 1 refuses any change of it, even to 1.
	var readonly string
	if err := conn.QueryRow(ctx, "SELECT toString(getSetting('readonly'))").Scan(&readonly); err != nil {
		return nil, fmt.Errorf("query: read the session's readonly setting: %w", err)
	}
	if readonly == "0" {
		settings["readonly"] = 1
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

// FlowColumns says which columns EachFlow reads.
type FlowColumns int

const (
	// EndpointColumns are what the enforcer needs: time, node, source,
	// verdict, direction, protocol, addresses, ports and both endpoints.
	EndpointColumns FlowColumns = iota
	// AllColumns is the whole stored flow, as the writer wrote it (the
	// detectors need bytes, L7 and drop reasons too).
	AllColumns
)

// flowRow is one row being scanned: the flow, and the columns that need
// converting into it.
type flowRow struct {
	f                          schema.Flow
	source, verdict, direction string
	srcIP, dstIP               net.IP
}

// flowColumns are the stored flow's columns and where each is scanned to;
// endpoint marks the EndpointColumns.
var flowColumns = []struct {
	name     string
	endpoint bool
	dest     func(*flowRow) any
}{
	{"time", true, func(r *flowRow) any { return &r.f.Time }},
	{"node", true, func(r *flowRow) any { return &r.f.Node }},
	{"source", true, func(r *flowRow) any { return &r.source }},
	{"verdict", true, func(r *flowRow) any { return &r.verdict }},
	{"drop_reason", false, func(r *flowRow) any { return &r.f.DropReason }},
	{"direction", true, func(r *flowRow) any { return &r.direction }},
	{"is_reply", true, func(r *flowRow) any { return &r.f.IsReply }},
	{"ip_version", false, func(r *flowRow) any { return &r.f.IPVersion }},
	{"protocol", true, func(r *flowRow) any { return &r.f.Protocol }},
	{"src_ip", true, func(r *flowRow) any { return &r.srcIP }},
	{"dst_ip", true, func(r *flowRow) any { return &r.dstIP }},
	{"src_port", true, func(r *flowRow) any { return &r.f.SrcPort }},
	{"dst_port", true, func(r *flowRow) any { return &r.f.DstPort }},
	{"tcp_flags", false, func(r *flowRow) any { return &r.f.TCPFlags }},
	{"src_namespace", true, func(r *flowRow) any { return &r.f.Src.Namespace }},
	{"src_pod", true, func(r *flowRow) any { return &r.f.Src.Pod }},
	{"src_workload", true, func(r *flowRow) any { return &r.f.Src.Workload }},
	{"src_workload_kind", true, func(r *flowRow) any { return &r.f.Src.WorkloadKind }},
	{"src_labels", true, func(r *flowRow) any { return &r.f.Src.Labels }},
	{"src_identity", false, func(r *flowRow) any { return &r.f.Src.Identity }},
	{"dst_namespace", true, func(r *flowRow) any { return &r.f.Dst.Namespace }},
	{"dst_pod", true, func(r *flowRow) any { return &r.f.Dst.Pod }},
	{"dst_workload", true, func(r *flowRow) any { return &r.f.Dst.Workload }},
	{"dst_workload_kind", true, func(r *flowRow) any { return &r.f.Dst.WorkloadKind }},
	{"dst_labels", true, func(r *flowRow) any { return &r.f.Dst.Labels }},
	{"dst_identity", false, func(r *flowRow) any { return &r.f.Dst.Identity }},
	{"dst_names", true, func(r *flowRow) any { return &r.f.DstNames }},
	{"l7_type", false, func(r *flowRow) any { return &r.f.L7Type }},
	{"dns_query", false, func(r *flowRow) any { return &r.f.DNSQuery }},
	{"dns_rcode", false, func(r *flowRow) any { return &r.f.DNSRCode }},
	{"dns_qtype", false, func(r *flowRow) any { return &r.f.DNSQType }},
	{"http_method", false, func(r *flowRow) any { return &r.f.HTTPMethod }},
	{"http_path", false, func(r *flowRow) any { return &r.f.HTTPPath }},
	{"http_status", false, func(r *flowRow) any { return &r.f.HTTPStatus }},
	{"bytes", false, func(r *flowRow) any { return &r.f.Bytes }},
	{"packets", false, func(r *flowRow) any { return &r.f.Packets }},
	{"duration_ms", false, func(r *flowRow) any { return &r.f.DurationMs }},
	{"mtls", false, func(r *flowRow) any { return &r.f.MTLS }},
	{"src_principal", false, func(r *flowRow) any { return &r.f.SrcPrincipal }},
	{"dst_principal", false, func(r *flowRow) any { return &r.f.DstPrincipal }},
	{"policy_names", false, func(r *flowRow) any { return &r.f.PolicyNames }},
	{"trace_id", false, func(r *flowRow) any { return &r.f.TraceID }},
}

// EachFlow streams the stored flows with since ≤ time < until (until zero:
// no end), oldest first. Each call of fn gets a flow of its own (maps and
// slices included) that it may keep; empty labels, names and policies are
// nil, as in a flow fresh from a source.
func EachFlow(ctx context.Context, conn driver.Conn, cols FlowColumns, since, until time.Time, fn func(*schema.Flow)) error {
	var names []string
	var r flowRow
	var dests []any
	for _, c := range flowColumns {
		if cols == AllColumns || c.endpoint {
			names = append(names, c.name)
			dests = append(dests, c.dest(&r))
		}
	}
	where, args := timeWindow(since, until)
	rows, err := conn.Query(ctx, "SELECT "+strings.Join(names, ", ")+" FROM flows WHERE "+where+" ORDER BY time", args...)
	if err != nil {
		return fmt.Errorf("read flows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r = flowRow{}
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("read flows: %w", err)
		}
		f := r.flow()
		fn(&f)
	}
	return rows.Err()
}

// History reads what was stored over a window, From ≤ time < To (To zero:
// no end), oldest first: the flows with every column and the nftables
// counter readings, as the detectors take them (analyze.History).
type History struct {
	Conn     driver.Conn
	From, To time.Time
}

// EachFlow is EachFlow over the window, every column.
func (h History) EachFlow(ctx context.Context, fn func(*schema.Flow)) error {
	return EachFlow(ctx, h.Conn, AllColumns, h.From, h.To, fn)
}

// EachCounterSample is EachCounterSample over the window.
func (h History) EachCounterSample(ctx context.Context, fn func(schema.CounterSample)) error {
	return EachCounterSample(ctx, h.Conn, h.From, h.To, fn)
}

// EachFlowGroup streams the stored flows with since ≤ time < until (until
// zero: no end) grouped by everything but their time and source port: the
// enforcer's columns and mtls (the report's mTLS coverage), so that a policy or a map is made from distinct
// conversations (ClickHouse does the grouping) instead of from every flow.
// fn gets each group's first flow fields, its number of flows and its
// first and last time; groups come in no particular order.
func EachFlowGroup(ctx context.Context, conn driver.Conn, since, until time.Time, fn func(f *schema.Flow, flows uint64, first, last time.Time)) error {
	var keys []string
	var r flowRow
	var dests []any
	for _, c := range flowColumns {
		// mtls too: the report's mTLS coverage counts the groups.
		if c.endpoint && c.name != "time" && c.name != "src_port" || c.name == "mtls" {
			key := c.name
			if strings.HasSuffix(key, "_labels") {
				// A map is stored in the order it was written, and maps
				// differing only in order are different keys.
				key = "mapSort(" + key + ")"
			}
			keys = append(keys, key)
			dests = append(dests, c.dest(&r))
		}
	}
	var n uint64
	var first, last time.Time
	dests = append(dests, &n, &first, &last)
	where, args := timeWindow(since, until)
	rows, err := conn.Query(ctx, "SELECT "+strings.Join(keys, ", ")+", count(), min(time), max(time) FROM flows WHERE "+where+
		" GROUP BY "+strings.Join(keys, ", "), args...)
	if err != nil {
		return fmt.Errorf("read flow groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r = flowRow{}
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("read flow groups: %w", err)
		}
		f := r.flow()
		f.Time = first.UTC()
		fn(&f, n, first.UTC(), last.UTC())
	}
	return rows.Err()
}

// flow converts the scanned row.
func (r *flowRow) flow() schema.Flow {
	f := r.f
	f.Time = f.Time.UTC()
	f.Verdict, f.Source, f.Direction = schema.Verdict(r.verdict), schema.SourceKind(r.source), schema.Direction(r.direction)
	f.SrcIP, _ = netip.AddrFromSlice(r.srcIP)
	f.DstIP, _ = netip.AddrFromSlice(r.dstIP)
	f.SrcIP, f.DstIP = storedAddr(f.SrcIP), storedAddr(f.DstIP)
	if len(f.Src.Labels) == 0 {
		f.Src.Labels = nil
	}
	if len(f.Dst.Labels) == 0 {
		f.Dst.Labels = nil
	}
	if len(f.DstNames) == 0 {
		f.DstNames = nil
	}
	if len(f.PolicyNames) == 0 {
		f.PolicyNames = nil
	}
	return f
}

// timeWindow is the condition since ≤ time < until (until zero: no end),
// to the nanosecond: clickhouse-go binds a time.Time argument to the second.
func timeWindow(since, until time.Time) (string, []any) {
	where := "time >= fromUnixTimestamp64Nano(toInt64(?), 'UTC')"
	args := []any{since.UnixNano()}
	if !until.IsZero() {
		where += " AND time < fromUnixTimestamp64Nano(toInt64(?), 'UTC')"
		args = append(args, until.UnixNano())
	}
	return where, args
}

// storedAddr undoes the writer's IPv6 column: IPv4 comes back from its
// mapped form, and "::" is how an unknown address (an Envoy line without
// a peer) was stored.
func storedAddr(a netip.Addr) netip.Addr {
	if a == netip.IPv6Unspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// EachCounterSample streams the nftables counter readings with since ≤
// time < until (until zero: no end), oldest first.
func EachCounterSample(ctx context.Context, conn driver.Conn, since, until time.Time, fn func(schema.CounterSample)) error {
	where, args := timeWindow(since, until)
	rows, err := conn.Query(ctx, "SELECT time, node, family, `table`, chain, handle, name, comment, drop, packets, bytes FROM nft_counters WHERE "+
		where+" ORDER BY time, node, family, `table`, chain, handle, name", args...)
	if err != nil {
		return fmt.Errorf("read nftables counters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s schema.CounterSample
		if err := rows.Scan(&s.Time, &s.Node, &s.Family, &s.Table, &s.Chain, &s.Handle, &s.Name, &s.Comment, &s.Drop, &s.Packets, &s.Bytes); err != nil {
			return fmt.Errorf("read nftables counters: %w", err)
		}
		s.Time = s.Time.UTC()
		fn(s)
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
