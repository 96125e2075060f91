package envoy

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/flowwarden/flowwarden/ingest/jsonscan"
)

// JSONParser reads Istio's JSON access-log encoding: keys in any order,
// values as strings (older Istio, "-" for absent), as numbers, or null
// (newer Istio). Unknown keys are skipped. Not safe for concurrent use.
type JSONParser struct {
	s jsonscan.Scanner
}

// Parse reads one JSON line.
func (p *JSONParser) Parse(line []byte) (AccessLog, error) {
	var a AccessLog
	a.Format = "istio-json"
	s := &p.s
	s.Reset(line)
	var start string
	seen := false
	err := s.Object(func(key []byte) error {
		if s.Null() {
			return nil
		}
		switch string(key) {
		case "start_time":
			v, err := p.str()
			start, seen = v, true
			return err
		case "method":
			return p.into(&a.Method)
		case "path":
			return p.into(&a.Path)
		case "protocol":
			return p.into(&a.Protocol)
		case "response_code":
			n, err := p.num()
			if n > 999 {
				return fmt.Errorf("response_code %d is not an HTTP status", n)
			}
			a.ResponseCode = int(n)
			return err
		case "response_flags":
			return p.into(&a.ResponseFlags)
		case "response_code_details":
			return p.into(&a.ResponseCodeDetails)
		case "connection_termination_details":
			return p.into(&a.ConnTermDetails)
		case "upstream_transport_failure_reason":
			return p.into(&a.UpstreamFailure)
		case "bytes_received":
			n, err := p.num()
			a.BytesReceived = n
			return err
		case "bytes_sent":
			n, err := p.num()
			a.BytesSent = n
			return err
		case "duration":
			n, err := p.num()
			a.DurationMs = n
			return err
		case "upstream_service_time":
			return p.into(&a.UpstreamServiceTime)
		case "x_forwarded_for":
			return p.into(&a.XForwardedFor)
		case "user_agent":
			return p.into(&a.UserAgent)
		case "request_id":
			return p.into(&a.RequestID)
		case "authority":
			return p.into(&a.Authority)
		case "upstream_host":
			return p.into(&a.UpstreamHost)
		case "upstream_cluster":
			return p.into(&a.UpstreamCluster)
		case "upstream_local_address":
			return p.into(&a.UpstreamLocalAddr)
		case "downstream_local_address":
			return p.into(&a.DownstreamLocalAddr)
		case "downstream_remote_address":
			return p.into(&a.DownstreamRemoteAddr)
		case "requested_server_name":
			return p.into(&a.RequestedServerName)
		case "route_name":
			return p.into(&a.RouteName)
		}
		return s.Skip()
	})
	if err != nil {
		return a, err
	}
	if s.SkipSpace(); s.Pos() != len(line) {
		return a, s.Errf("unexpected data after the JSON object")
	}
	if !seen {
		return a, fmt.Errorf("%w: no start_time", ErrNotAccessLog)
	}
	t, err := parseStartTime(start)
	if err != nil {
		return a, err
	}
	a.StartTime = t
	return a, a.check()
}

// into reads a string value (numbers are kept as their text) into dst.
func (p *JSONParser) into(dst *string) error {
	v, err := p.str()
	*dst = dash(v)
	return err
}

func (p *JSONParser) str() (string, error) {
	s := &p.s
	switch c := s.Peek(); {
	case c == '"':
		b, err := s.Str()
		return string(b), err
	case c == '-' || (c >= '0' && c <= '9'):
		b, err := s.Number()
		return string(b), err
	case c == 't' || c == 'f':
		v, err := s.Bool()
		return strconv.FormatBool(v), err
	case c == 0:
		return "", jsonscan.ErrEOF
	}
	return "", s.Errf("expected a string or a number")
}

// num reads a number given as a JSON number, a quoted number, or "-".
func (p *JSONParser) num() (uint64, error) {
	v, err := p.str()
	if err != nil {
		return 0, err
	}
	if v == "-" || v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, errors.New("expected a non-negative integer, got " + strconv.Quote(truncate(v, 30)))
	}
	return n, nil
}
