package envoy

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkParseJSON compares the access-log parser with encoding/json
// decoding the same JSON lines into a map, in the same run.
func BenchmarkParseJSON(b *testing.B) {
	var lines [][]byte
	for _, f := range sampleFiles(b) {
		fh, err := os.Open(f)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, MaxLineBytes), MaxLineBytes)
		for sc.Scan() {
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "{") {
				lines = append(lines, append([]byte(nil), sc.Bytes()...))
			}
		}
		fh.Close()
	}
	if len(lines) == 0 {
		b.Fatal("no JSON samples")
	}
	var p Parser
	var ours, std time.Duration
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line := lines[i%len(lines)]
		t0 := time.Now()
		a, err := p.Parse(line)
		if err != nil {
			b.Fatal(err)
		}
		_ = ToFlow(&a)
		t1 := time.Now()
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			b.Fatal(err)
		}
		ours += t1.Sub(t0)
		std += time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/ours.Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)/std.Seconds(), "encoding-json-map-lines/s")
	b.ReportMetric(std.Seconds()/ours.Seconds(), "speedup-x")
}

// BenchmarkParseText measures the text formats alone.
func BenchmarkParseText(b *testing.B) {
	line := []byte(`[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default`)
	var p Parser
	for i := 0; i < b.N; i++ {
		a, err := p.Parse(line)
		if err != nil {
			b.Fatal(err)
		}
		_ = ToFlow(&a)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
