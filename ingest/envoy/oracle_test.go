package envoy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// oracleJSON reads an Istio JSON access-log line with encoding/json, key by
// key in document order (a later duplicate overrides an earlier one unless
// it is null, as the parser does), into the same AccessLog the parser
// returns. It shares only dash, parseStartTime and check with the parser:
// the JSON reading is encoding/json's.
func oracleJSON(line []byte) (AccessLog, error) {
	a := AccessLog{Format: "istio-json"}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return a, fmt.Errorf("not an object: %v", err)
	}
	text := func(v any) (string, error) {
		switch v := v.(type) {
		case string:
			return v, nil
		case json.Number:
			return string(v), nil
		case bool:
			return strconv.FormatBool(v), nil
		}
		return "", fmt.Errorf("expected a string or a number, got %T", v)
	}
	num := func(v any) (uint64, error) {
		s, err := text(v)
		if err != nil || s == "-" || s == "" {
			return 0, err
		}
		return strconv.ParseUint(s, 10, 64)
	}
	strs := map[string]*string{
		"method": &a.Method, "path": &a.Path, "protocol": &a.Protocol, "response_flags": &a.ResponseFlags,
		"response_code_details": &a.ResponseCodeDetails, "connection_termination_details": &a.ConnTermDetails,
		"upstream_transport_failure_reason": &a.UpstreamFailure, "upstream_service_time": &a.UpstreamServiceTime,
		"x_forwarded_for": &a.XForwardedFor, "user_agent": &a.UserAgent, "request_id": &a.RequestID,
		"authority": &a.Authority, "upstream_host": &a.UpstreamHost, "upstream_cluster": &a.UpstreamCluster,
		"upstream_local_address": &a.UpstreamLocalAddr, "downstream_local_address": &a.DownstreamLocalAddr,
		"downstream_remote_address": &a.DownstreamRemoteAddr, "requested_server_name": &a.RequestedServerName,
		"route_name": &a.RouteName,
	}
	nums := map[string]*uint64{"bytes_received": &a.BytesReceived, "bytes_sent": &a.BytesSent, "duration": &a.DurationMs}
	var start string
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return a, err
		}
		key := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return a, err
		}
		if v == nil {
			continue
		}
		switch {
		case key == "start_time":
			if start, err = text(v); err != nil {
				return a, err
			}
			seen = true
		case key == "response_code":
			n, err := num(v)
			if err != nil {
				return a, err
			}
			if n > 999 {
				return a, fmt.Errorf("response_code %d", n)
			}
			a.ResponseCode = int(n)
		case strs[key] != nil:
			s, err := text(v)
			if err != nil {
				return a, err
			}
			*strs[key] = dash(s)
		case nums[key] != nil:
			n, err := num(v)
			if err != nil {
				return a, err
			}
			*nums[key] = n
		}
	}
	if _, err := dec.Token(); err != nil {
		return a, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return a, errors.New("data after the object")
	}
	if !seen {
		return a, ErrNotAccessLog
	}
	t, err := parseStartTime(start)
	if err != nil {
		return a, err
	}
	a.StartTime = t
	return a, a.check()
}

// jsonSampleLines are the JSON lines of every published sample (those in
// the repository, and the third-party captures when ../shared is there).
func jsonSampleLines(t testing.TB, files []string) (lines [][]byte, names []string) {
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, MaxLineBytes), MaxLineBytes)
		for n := 1; sc.Scan(); n++ {
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "{") {
				lines = append(lines, append([]byte(nil), sc.Bytes()...))
				names = append(names, fmt.Sprintf("%s:%d", filepath.Base(f), n))
			}
		}
		fh.Close()
	}
	return lines, names
}

// repoSampleFiles are the samples inside the repository only: benchmarks
// read these so they run, and measure the same lines, in a plain clone.
func repoSampleFiles(t testing.TB) []string {
	files, _ := filepath.Glob("../../testdata/istio-envoy/*")
	if len(files) == 0 {
		t.Fatal("no Envoy samples in testdata/istio-envoy")
	}
	return files
}

// TestJSONParserMatchesEncodingJSON: on every published JSON line the
// parser returns exactly what encoding/json reads.
func TestJSONParserMatchesEncodingJSON(t *testing.T) {
	lines, names := jsonSampleLines(t, sampleFiles(t))
	inRepo, _ := jsonSampleLines(t, repoSampleFiles(t))
	if len(inRepo) < 3 {
		t.Fatalf("%d JSON lines in testdata/istio-envoy, want at least 3", len(inRepo))
	}
	var p JSONParser
	for i, line := range lines {
		want, werr := oracleJSON(line)
		got, gerr := p.Parse(line)
		if werr != nil || gerr != nil {
			t.Errorf("%s: encoding/json: %v, parser: %v", names[i], werr, gerr)
			continue
		}
		if got != want {
			t.Errorf("%s:\nparser        %+v\nencoding/json %+v", names[i], got, want)
		}
	}
	t.Logf("%d JSON lines compared (%d in the repository)", len(lines), len(inRepo))
}
