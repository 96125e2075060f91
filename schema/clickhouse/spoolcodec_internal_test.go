package clickhouse

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// fillAll sets every field of v (recursively) to a non-zero value derived
// from seed, so a field the codec forgets shows as a difference.
func fillAll(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+seed%26)) + v.Type().Name())
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed + 1))
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fillAll(t, s.Index(i), seed+i)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.ValueOf("app"), reflect.ValueOf("web"))
		m.SetMapIndex(reflect.ValueOf("k8s:io.kubernetes.pod.namespace"), reflect.ValueOf(""))
		v.Set(m)
	case reflect.Struct:
		switch v.Interface().(type) {
		case time.Time:
			v.Set(reflect.ValueOf(time.Date(2026, 12, 1, 10, 0, seed, 123456789, time.UTC)))
			return
		case netip.Addr:
			a := netip.MustParseAddr("fd00::1234")
			if seed%2 == 0 {
				a = netip.MustParseAddr("10.0.0.7")
			}
			v.Set(reflect.ValueOf(a))
			return
		}
		for i := range v.NumField() {
			fillAll(t, v.Field(i), seed+i)
		}
	default:
		t.Fatalf("fillAll: no rule for %s: teach the spool codec and this test the new field type", v.Type())
	}
}

// TestSpoolCodecRoundTrip: every field of schema.Flow survives the spool's
// record encoding (a new field the codec does not write fails here), as do
// zero values, and a damaged payload is an error, never a wrong flow.
func TestSpoolCodecRoundTrip(t *testing.T) {
	var full schema.Flow
	fillAll(t, reflect.ValueOf(&full).Elem(), 3)
	var v6 schema.Flow
	fillAll(t, reflect.ValueOf(&v6).Elem(), 4)
	v6.SrcIP = netip.MustParseAddr("fe80::1%eth0")
	flows := []schema.Flow{full, {}, v6}
	payload := appendFlows(nil, flows)
	var d flowDecoder
	got, err := d.decodeFlows(payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, flows) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, flows)
	}
	for cut := 1; cut < len(payload); cut += 7 {
		if out, err := d.decodeFlows(payload[:cut], nil); err == nil || len(out) != 0 {
			t.Fatalf("payload cut at %d: %d flows, err %v", cut, len(out), err)
		}
	}
	if out, err := d.decodeFlows(append(append([]byte(nil), payload...), 0), nil); err == nil || len(out) != 0 {
		t.Fatalf("trailing byte: %d flows, err %v", len(out), err)
	}
}

// TestSpoolReadsGobRecordSegments: a checksummed segment of the previous
// version (gob payloads, segmentMagicGob), left by an older serve, is still
// read in full after an upgrade.
func TestSpoolReadsGobRecordSegments(t *testing.T) {
	var raw bytes.Buffer
	raw.WriteString(segmentMagicGob)
	var want []schema.Flow
	for r := range 3 {
		chunk := []schema.Flow{testFlow(2 * r), testFlow(2*r + 1)}
		var payload bytes.Buffer
		if err := gob.NewEncoder(&payload).Encode(chunk); err != nil {
			t.Fatal(err)
		}
		var hdr [8]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(payload.Len()))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(payload.Bytes(), castagnoli))
		raw.WriteString(recordMarker)
		raw.Write(hdr[:])
		raw.Write(payload.Bytes())
		want = append(want, chunk...)
	}
	path := filepath.Join(t.TempDir(), "00000000000000000001-abcd.seg")
	if err := os.WriteFile(path, raw.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, dmg, err := readSegment(path)
	if err != nil || dmg != (segmentDamage{}) || len(got) != len(want) {
		t.Fatalf("gob-record segment: %d flows, %+v, %v", len(got), dmg, err)
	}
	for i := range got {
		if got[i].Node != want[i].Node || !got[i].Time.Equal(want[i].Time) || got[i].SrcIP != want[i].SrcIP {
			t.Fatalf("flow %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestSpoolReadsV3Segments: a segment of the version before DNSQType
// (segmentMagicV3: each flow's encoding ends at TraceID) is still read in
// full after an upgrade, and a current one keeps the type.
func TestSpoolReadsV3Segments(t *testing.T) {
	var raw bytes.Buffer
	raw.WriteString(segmentMagicV3)
	var want []schema.Flow
	for r := range 3 {
		chunk := []schema.Flow{testFlow(2 * r), testFlow(2*r + 1)}
		chunk[1].TraceID = fmt.Sprintf("trace-%d", r)
		payload := binary.AppendUvarint(nil, uint64(len(chunk)))
		for i := range chunk {
			b := appendFlow(nil, &chunk[i], nil)
			payload = append(payload, b[:len(b)-1]...) // drop the empty DNSQType
		}
		var hdr [8]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(payload, castagnoli))
		raw.WriteString(recordMarker)
		raw.Write(hdr[:])
		raw.Write(payload)
		want = append(want, chunk...)
	}
	path := filepath.Join(t.TempDir(), "00000000000000000001-abcd.seg")
	if err := os.WriteFile(path, raw.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, dmg, err := readSegment(path)
	if err != nil || dmg != (segmentDamage{}) || !reflect.DeepEqual(got, want) {
		t.Fatalf("v3 segment: %d flows, %+v, %v\ngot  %+v\nwant %+v", len(got), dmg, err, got, want)
	}
	// The same bytes under the current magic are damaged records, not flows
	// read askew.
	cur := append([]byte(segmentMagic), raw.Bytes()[len(segmentMagicV3):]...)
	if err := os.WriteFile(path, cur, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, dmg, _ := readSegment(path); len(got) != 0 || dmg.Corrupt != 3 {
		t.Errorf("v3 records under %s: %d flows, %+v; want 3 corrupt records", segmentMagic, len(got), dmg)
	}
}

// TestSpoolReadsV4Segments: a segment of the version before label sets
// were written once per record (segmentMagicV4: labels inline in every
// endpoint) is still read in full after an upgrade; the same records under
// the current magic are damaged, not flows read askew.
func TestSpoolReadsV4Segments(t *testing.T) {
	var raw bytes.Buffer
	raw.WriteString(segmentMagicV4)
	var want []schema.Flow
	for r := range 3 {
		chunk := []schema.Flow{testFlow(2 * r), testFlow(2*r + 1)}
		chunk[0].Src.Labels = map[string]string{"app": "web", "tier": fmt.Sprint(r)}
		chunk[1].Src.Labels, chunk[1].Dst.Labels = chunk[0].Src.Labels, chunk[0].Src.Labels
		chunk[1].DNSQType = "TXT"
		payload := binary.AppendUvarint(nil, uint64(len(chunk)))
		for i := range chunk {
			payload = appendFlow(payload, &chunk[i], nil)
		}
		var hdr [8]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(payload, castagnoli))
		raw.WriteString(recordMarker)
		raw.Write(hdr[:])
		raw.Write(payload)
		want = append(want, chunk...)
	}
	path := filepath.Join(t.TempDir(), "00000000000000000001-abcd.seg")
	if err := os.WriteFile(path, raw.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, dmg, err := readSegment(path)
	if err != nil || dmg != (segmentDamage{}) || !reflect.DeepEqual(got, want) {
		t.Fatalf("v4 segment: %d flows, %+v, %v\ngot  %+v\nwant %+v", len(got), dmg, err, got, want)
	}
	cur := append([]byte(segmentMagic), raw.Bytes()[len(segmentMagicV4):]...)
	if err := os.WriteFile(path, cur, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, dmg, _ := readSegment(path); len(got) != 0 || dmg.Corrupt != 3 {
		t.Errorf("v4 records under %s: %d flows, %+v; want 3 corrupt records", segmentMagic, len(got), dmg)
	}
}

// TestSpoolLabelSetsOncePerRecord: flows that share a label map carry it
// once per record; decoded, they share one map again; references to a set
// not yet written are damage.
func TestSpoolLabelSetsOncePerRecord(t *testing.T) {
	web := map[string]string{"app": "web", "k8s:io.kubernetes.pod.namespace": "shop", "version": "v1.2.3"}
	db := map[string]string{"app": "db"}
	copyOfWeb := map[string]string{"app": "web", "k8s:io.kubernetes.pod.namespace": "shop", "version": "v1.2.3"}
	var flows []schema.Flow
	for i := range 100 {
		f := testFlow(i)
		f.Src.Labels, f.Dst.Labels = web, db
		if i%2 == 1 {
			f.Src.Labels, f.Dst.Labels = db, nil
		}
		flows = append(flows, f)
	}
	flows[7].Dst.Labels = copyOfWeb // equal, not shared: written again
	payload := appendFlows(nil, flows)
	inline := binary.AppendUvarint(nil, uint64(len(flows)))
	for i := range flows {
		inline = appendFlow(inline, &flows[i], nil)
	}
	if len(payload) > len(inline)*3/4 {
		t.Errorf("record with shared label sets: %d bytes, inline %d", len(payload), len(inline))
	}
	var d flowDecoder
	got, err := d.decodeFlows(payload, nil)
	if err != nil || !reflect.DeepEqual(got, flows) {
		t.Fatalf("round trip: %v", err)
	}
	ptr := func(m map[string]string) uintptr { return reflect.ValueOf(m).Pointer() }
	if ptr(got[0].Src.Labels) != ptr(got[98].Src.Labels) || ptr(got[0].Dst.Labels) != ptr(got[1].Src.Labels) ||
		ptr(got[7].Dst.Labels) == ptr(got[0].Src.Labels) {
		t.Error("decoded flows do not share their label sets as the encoded ones did")
	}
	// A second record starts its numbering afresh.
	again, err := d.decodeFlows(payload, nil)
	if err != nil || !reflect.DeepEqual(again, flows) || ptr(again[0].Src.Labels) == ptr(got[0].Src.Labels) {
		t.Fatalf("second record: %v", err)
	}
	// A reference beyond the sets written so far: the first flow writes set
	// 1, the second refers to set 2.
	one := testFlow(0)
	one.Src.Labels = web
	rec := binary.AppendUvarint(nil, 2)
	rec = appendFlow(rec, &one, labelRefs{})
	ok := appendFlow(rec, &one, labelRefs{ptr(web): 1})
	if out, err := d.decodeFlows(ok, nil); err != nil || len(out) != 2 {
		t.Fatalf("reference to set 1: %d flows, %v", len(out), err)
	}
	rec = appendFlow(rec, &one, labelRefs{ptr(web): 2})
	if out, err := d.decodeFlows(rec, nil); err == nil || len(out) != 0 {
		t.Fatalf("reference to an unwritten set: %d flows, %v", len(out), err)
	}
}

// BenchmarkSpoolCodec compares the spool's record encoding with gob (what
// it replaced) on 256-flow records, encode plus decode.
func BenchmarkSpoolCodec(b *testing.B) {
	chunk := make([]schema.Flow, 256)
	for i := range chunk {
		chunk[i] = testFlow(i)
	}
	var ours, theirs time.Duration
	var buf []byte
	var d flowDecoder // one per segment, as readSegment has
	for range b.N {
		t0 := time.Now()
		buf = appendFlows(buf[:0], chunk)
		if _, err := d.decodeFlows(buf, nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var g bytes.Buffer
		if err := gob.NewEncoder(&g).Encode(chunk); err != nil {
			b.Fatal(err)
		}
		var out []schema.Flow
		if err := gob.NewDecoder(&g).Decode(&out); err != nil {
			b.Fatal(err)
		}
		ours += t1.Sub(t0)
		theirs += time.Since(t1)
	}
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "speedup-x")
}
