// Package envoy ingests Envoy and Istio access logs: Istio's default text
// format (current and pre-1.9), its JSON encoding (all-string older form and
// typed newer form), and Envoy's own default format. Each line becomes a
// schema.Flow with source "envoy".
package envoy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flowwarden/flowwarden/schema"
)

// AccessLog is one access-log entry, whatever its format. Absent values
// ("-", null) are empty strings or zero.
type AccessLog struct {
	StartTime            time.Time
	Method, Path         string
	Protocol             string
	ResponseCode         int
	ResponseFlags        string
	ResponseCodeDetails  string
	ConnTermDetails      string
	UpstreamFailure      string
	BytesReceived        uint64
	BytesSent            uint64
	DurationMs           uint64
	UpstreamServiceTime  string
	XForwardedFor        string
	UserAgent            string
	RequestID            string
	Authority            string
	UpstreamHost         string
	UpstreamCluster      string
	UpstreamLocalAddr    string
	DownstreamLocalAddr  string
	DownstreamRemoteAddr string
	RequestedServerName  string
	RouteName            string
	// Format names the format the line was read in.
	Format string
}

// Cluster is a parsed upstream cluster name.
type Cluster struct {
	// Direction is "outbound", "inbound", "passthrough", "blackhole" or "".
	Direction string
	Port      uint16
	Subset    string
	// Host is the service FQDN ("httpbin.foo.svc.cluster.local").
	Host string
}

// ParseCluster reads Istio cluster names: outbound|8080||svc.ns.svc.cluster.local,
// inbound|8080|| (or inbound|8080|http|svc.ns...), PassthroughCluster, BlackHoleCluster.
func ParseCluster(s string) Cluster {
	switch s {
	case "", "-":
		return Cluster{}
	case "PassthroughCluster", "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6":
		return Cluster{Direction: "passthrough"}
	case "BlackHoleCluster":
		return Cluster{Direction: "blackhole"}
	}
	parts := strings.Split(s, "|")
	if len(parts) != 4 {
		return Cluster{Host: s}
	}
	c := Cluster{Direction: parts[0], Subset: parts[2], Host: parts[3]}
	if p, err := strconv.ParseUint(parts[1], 10, 16); err == nil {
		c.Port = uint16(p)
	}
	if c.Direction != "outbound" && c.Direction != "inbound" {
		c.Direction = ""
	}
	return c
}

// ErrNotAccessLog marks a line that is not an access log entry.
var ErrNotAccessLog = errors.New("not an access log entry")

// ParseText reads a line in Istio's text format (1.9+ or older) or Envoy's
// default format, telling them apart by their number of fields; fields
// beyond the format's are kept out of the way.
func ParseText(line string) (AccessLog, error) {
	var a AccessLog
	line = strings.TrimSpace(line)
	if !utf8.ValidString(line) {
		return a, &schema.FieldError{Field: "line", Reason: schema.ReasonUTF8, Value: line}
	}
	if !strings.HasPrefix(line, "[") {
		return a, fmt.Errorf("%w: no [START_TIME]", ErrNotAccessLog)
	}
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return a, errors.New("unterminated [START_TIME]")
	}
	t, err := parseStartTime(line[1:end])
	if err != nil {
		return a, err
	}
	a.StartTime = t
	f, err := fields(line[end+1:])
	if err != nil {
		return a, err
	}
	if len(f) < 12 {
		return a, fmt.Errorf("%d fields after the time; no known format has fewer than 12", len(f))
	}
	if err := a.setRequest(f[0]); err != nil {
		return a, err
	}
	code, err := parseInt(f[1])
	if err != nil {
		return a, fmt.Errorf("response code: %w", err)
	}
	a.ResponseCode = code
	a.ResponseFlags = dash(f[2])
	var rest []string
	switch {
	case len(f) >= 21: // Istio 1.9+
		a.Format = "istio-text"
		a.ResponseCodeDetails, a.ConnTermDetails, a.UpstreamFailure = dash(f[3]), dash(f[4]), dash(f[5])
		rest = f[6:]
	case len(f) >= 17: // Istio before 1.9
		a.Format = "istio-text-pre-1.9"
		rest = f[3:]
	default: // Envoy's default format
		a.Format = "envoy-text"
		rest = f[3:]
	}
	if a.BytesReceived, err = parseUint(rest[0]); err != nil {
		return a, fmt.Errorf("bytes received: %w", err)
	}
	if a.BytesSent, err = parseUint(rest[1]); err != nil {
		return a, fmt.Errorf("bytes sent: %w", err)
	}
	if a.DurationMs, err = parseUint(rest[2]); err != nil {
		return a, fmt.Errorf("duration: %w", err)
	}
	a.UpstreamServiceTime = dash(rest[3])
	a.XForwardedFor, a.UserAgent, a.RequestID, a.Authority, a.UpstreamHost = dash(rest[4]), dash(rest[5]), dash(rest[6]), dash(rest[7]), dash(rest[8])
	if a.Format != "envoy-text" {
		a.UpstreamCluster, a.UpstreamLocalAddr, a.DownstreamLocalAddr, a.DownstreamRemoteAddr, a.RequestedServerName =
			dash(rest[9]), dash(rest[10]), dash(rest[11]), dash(rest[12]), dash(rest[13])
		if a.Format == "istio-text" {
			a.RouteName = dash(rest[14])
		}
	}
	return a, a.check()
}

// check refuses an entry whose values do not fit the flow record: a
// control character in a field that becomes a name or path, a port above
// 65535 in an address or cluster name, a duration or byte count the
// columns cannot hold.
func (a *AccessLog) check() error {
	for _, f := range [...]struct{ field, v string }{
		{"method", a.Method}, {"path", a.Path}, {"authority", a.Authority}, {"upstream_cluster", a.UpstreamCluster},
		{"requested_server_name", a.RequestedServerName}, {"route_name", a.RouteName}, {"response_flags", a.ResponseFlags},
		{"response_code_details", a.ResponseCodeDetails},
	} {
		if err := schema.CheckName(f.field, f.v); err != nil {
			return err
		}
	}
	for _, f := range [...]struct{ field, v string }{
		{"upstream_host", a.UpstreamHost}, {"upstream_local_address", a.UpstreamLocalAddr},
		{"downstream_local_address", a.DownstreamLocalAddr}, {"downstream_remote_address", a.DownstreamRemoteAddr},
	} {
		if err := checkAddrPort(f.field, f.v); err != nil {
			return err
		}
	}
	if parts := strings.Split(a.UpstreamCluster, "|"); len(parts) == 4 && parts[1] != "" {
		if p, err := strconv.ParseUint(parts[1], 10, 64); err == nil {
			if err := schema.CheckPort("upstream_cluster", p); err != nil {
				return err
			}
		}
	}
	if a.DurationMs > 1<<32-1 {
		return &schema.FieldError{Field: "duration", Reason: schema.ReasonValueRange, Value: strconv.FormatUint(a.DurationMs, 10)}
	}
	if a.BytesReceived+a.BytesSent < a.BytesReceived {
		return &schema.FieldError{Field: "bytes", Reason: schema.ReasonValueRange, Value: strconv.FormatUint(a.BytesReceived, 10) + "+" + strconv.FormatUint(a.BytesSent, 10)}
	}
	return nil
}

// checkAddrPort refuses an IP:port address whose port is above 65535 (it
// would otherwise pass for no address at all).
func checkAddrPort(field, s string) error {
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return nil
	}
	host, port := strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]"), s[i+1:]
	p, err := strconv.ParseUint(port, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil
	}
	if _, herr := netip.ParseAddr(host); herr != nil {
		return nil
	}
	if errors.Is(err, strconv.ErrRange) {
		p = 1<<64 - 1
	}
	return schema.CheckPort(field, p)
}

// setRequest splits "METHOD PATH PROTOCOL" ("- - -" for TCP).
func (a *AccessLog) setRequest(s string) error {
	parts := strings.Fields(s)
	if len(parts) != 3 {
		return fmt.Errorf("request %q is not \"METHOD PATH PROTOCOL\"", truncate(s, 60))
	}
	a.Method, a.Path, a.Protocol = dash(parts[0]), dash(parts[1]), dash(parts[2])
	return nil
}

// fields splits the rest of a text line into fields: "quoted strings"
// (which may hold spaces and \" escapes) and bare tokens.
func fields(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			i++
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("unterminated quoted field")
			}
			out = append(out, b.String())
			i = j + 1
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out, nil
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func parseUint(s string) (uint64, error) {
	if s == "-" || s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func parseInt(s string) (int, error) {
	if s == "-" || s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err == nil && (n < 0 || n > 999) {
		return 0, fmt.Errorf("%d is not an HTTP status", n)
	}
	return n, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// parseStartTime reads an RFC 3339 start time; one before 1970 (the zero
// time of a broken clock or a hostile line) is refused, since it would
// pass for "no time" downstream.
func parseStartTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("start time %q: %w", truncate(s, 40), err)
	}
	if t.Before(time.Unix(0, 0)) {
		return time.Time{}, fmt.Errorf("start time %q: before 1970", truncate(s, 40))
	}
	if err := schema.CheckTime("start_time", t); err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}
