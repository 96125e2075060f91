package hubble

import (
	"testing"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
)

func benchLines(b *testing.B) ([][]byte, int64) {
	var lines [][]byte
	var n int64
	for _, ls := range sampleLines(b) {
		for _, l := range ls {
			lines = append(lines, l)
			n += int64(len(l))
		}
	}
	return lines, n
}

// BenchmarkDecodeFast is the fast path: JSON line → schema.Flow.
func BenchmarkDecodeFast(b *testing.B) {
	lines, size := benchLines(b)
	d := NewDecoder()
	b.SetBytes(size / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Decode(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkDecodeProtojson is the baseline: protojson.Unmarshal of the same
// lines into GetFlowsResponse (without even converting to schema.Flow).
func BenchmarkDecodeProtojson(b *testing.B) {
	lines, size := benchLines(b)
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	b.SetBytes(size / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var resp observer.GetFlowsResponse
		if err := opts.Unmarshal(lines[i%len(lines)], &resp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}
