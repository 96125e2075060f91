package schema

import (
	"errors"
	"testing"
	"time"
)

func TestCheckName(t *testing.T) {
	for s, reason := range map[string]string{
		"frontend-7d4b9": "", "é-ü 日本": "", "": "",
		"a\x00b": ReasonControlChar, "\x1b[2J": ReasonControlChar, "a\u0085": ReasonControlChar, "\x7f": ReasonControlChar, "\t": ReasonControlChar,
		"\xff": ReasonUTF8, "a\xc3": ReasonUTF8, "\xed\xa0\x80": ReasonUTF8,
	} {
		err := CheckName("f", s)
		var fe *FieldError
		switch {
		case reason == "" && err != nil:
			t.Errorf("%q refused: %v", s, err)
		case reason != "" && (!errors.As(err, &fe) || fe.Reason != reason):
			t.Errorf("%q: %v, want %q", s, err, reason)
		}
		if c := CleanName(s); CheckName("f", c) != nil || (reason == "" && c != s) {
			t.Errorf("CleanName(%q) = %q", s, c)
		}
	}
}

func TestTimeRange(t *testing.T) {
	for _, tm := range []time.Time{MinTime, MaxTime, time.Date(2021, 6, 16, 0, 0, 0, 0, time.UTC)} {
		if err := CheckTime("t", tm); err != nil {
			t.Errorf("%v refused: %v", tm, err)
		}
		// Representable by the writer's nanoseconds.
		if time.Unix(0, tm.UnixNano()).UTC() != tm.UTC() {
			t.Errorf("%v does not survive UnixNano", tm)
		}
	}
	for _, tm := range []time.Time{MinTime.Add(-time.Microsecond), MaxTime.Add(time.Microsecond), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), {}} {
		if err := CheckTime("t", tm); err == nil {
			t.Errorf("%v accepted", tm)
		}
	}
	f := Flow{Time: time.Date(2021, 6, 16, 0, 0, 0, 0, time.UTC), Verdict: "BOGUS"}
	if err := f.Validate(); err == nil {
		t.Error("verdict BOGUS accepted")
	}
	f.Verdict = VerdictForwarded
	f.Src.Labels = map[string]string{"app": "a\x00"}
	if err := f.Validate(); err == nil {
		t.Error("NUL in a label accepted")
	}
}

// An endpoint's refused value is named with its side (src_pod, dst_labels),
// and a valid flow validates without allocating.
func TestValidateEndpointFieldNames(t *testing.T) {
	ok := Flow{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Verdict: VerdictForwarded,
		Src: Endpoint{Namespace: "a", Pod: "web-1", Labels: map[string]string{"app": "web"}},
		Dst: Endpoint{Namespace: "b", Workload: "db", Labels: map[string]string{"app": "db", "tier": "data"}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ok.Validate() }); n != 0 {
		t.Errorf("Validate of a valid flow: %v allocations", n)
	}
	for want, f := range map[string]func(*Flow){
		"src_pod":           func(f *Flow) { f.Src.Pod = "a\x07" },
		"dst_workload_kind": func(f *Flow) { f.Dst.WorkloadKind = "\xff" },
		"dst_labels":        func(f *Flow) { f.Dst.Labels = map[string]string{"k": "\x01"} },
		"src_labels":        func(f *Flow) { f.Src.Labels = map[string]string{"\x01": "v"} },
	} {
		bad := ok
		f(&bad)
		var fe *FieldError
		if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != want {
			t.Errorf("%s: %v", want, err)
		}
	}
}
