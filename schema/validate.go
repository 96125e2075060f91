package schema

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The range of event times a flow may carry: what the flows table's
// DateTime64(6) column holds (1900-01-01 to 2299-12-31) intersected with
// what time.Time.UnixNano represents (1677-09-21 to 2262-04-11), which the
// writer uses. A time outside it would be stored as another time.
var (
	MinTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Unix(0, 1<<63-1).UTC().Truncate(time.Microsecond)
)

// Reasons a value is refused, as counted in flowwarden_ingest_rejected_total.
const (
	ReasonTimeRange   = "time out of range"
	ReasonPortRange   = "port out of range"
	ReasonValueRange  = "value out of range"
	ReasonVerdict     = "unknown verdict"
	ReasonUTF8        = "invalid UTF-8"
	ReasonControlChar = "control character in a name"
)

// FieldError says which field of a record holds a value outside its type,
// and why (one of the Reason constants).
type FieldError struct {
	Field  string
	Reason string
	Value  string
}

func (e *FieldError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("%s: %s (%q)", e.Field, e.Reason, v)
}

// CheckTime refuses a time outside [MinTime, MaxTime].
func CheckTime(field string, t time.Time) error {
	if t.Before(MinTime) || t.After(MaxTime) {
		return &FieldError{Field: field, Reason: ReasonTimeRange, Value: t.UTC().Format(time.RFC3339Nano)}
	}
	return nil
}

// CheckPort refuses a port number above 65535.
func CheckPort(field string, p uint64) error {
	if p > 65535 {
		return &FieldError{Field: field, Reason: ReasonPortRange, Value: fmt.Sprint(p)}
	}
	return nil
}

// CheckName refuses a string that is not valid UTF-8 or holds a control
// character (U+0000–U+001F, U+007F–U+009F): names, labels, paths and
// queries are shown and matched as text, and a NUL or an escape sequence in
// one hides what it is.
func CheckName(field, s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		if c < 0x80 {
			return &FieldError{Field: field, Reason: ReasonControlChar, Value: s}
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return &FieldError{Field: field, Reason: ReasonUTF8, Value: s}
		}
		if r >= 0x80 && r <= 0x9f {
			return &FieldError{Field: field, Reason: ReasonControlChar, Value: s}
		}
		i += n
	}
	return nil
}

// KnownVerdict reports whether v is one of the verdicts flows carry.
func KnownVerdict(v Verdict) bool {
	switch v {
	case VerdictUnknown, VerdictForwarded, VerdictDropped, VerdictError, VerdictAudit,
		VerdictRedirected, VerdictTraced, VerdictTranslated:
		return true
	}
	return false
}

// Validate checks that every value of the flow is one its column holds as
// given: the time in range, a known verdict and direction, and text fields
// valid UTF-8 without control characters. Parsers reject what fails it (and
// their fuzz tests assert that what they accept passes it).
func (f *Flow) Validate() error {
	if err := CheckTime("time", f.Time); err != nil {
		return err
	}
	if !KnownVerdict(f.Verdict) {
		return &FieldError{Field: "verdict", Reason: ReasonVerdict, Value: string(f.Verdict)}
	}
	switch f.Direction {
	case DirectionUnknown, DirectionIngress, DirectionEgress, "":
	default:
		return &FieldError{Field: "direction", Reason: ReasonValueRange, Value: string(f.Direction)}
	}
	for _, s := range [...]struct{ field, v string }{
		{"node", f.Node}, {"drop_reason", f.DropReason}, {"protocol", f.Protocol}, {"tcp_flags", f.TCPFlags},
		{"l7_type", f.L7Type}, {"dns_query", f.DNSQuery}, {"dns_qtype", f.DNSQType}, {"http_method", f.HTTPMethod}, {"http_path", f.HTTPPath},
		{"src_principal", f.SrcPrincipal}, {"dst_principal", f.DstPrincipal}, {"trace_id", f.TraceID},
	} {
		if err := CheckName(s.field, s.v); err != nil {
			return err
		}
	}
	if err := f.Src.validate("src"); err != nil {
		return err
	}
	if err := f.Dst.validate("dst"); err != nil {
		return err
	}
	for _, n := range f.DstNames {
		if err := CheckName("dst_names", n); err != nil {
			return err
		}
	}
	for _, n := range f.PolicyNames {
		if err := CheckName("policy_names", n); err != nil {
			return err
		}
	}
	return nil
}

func (e *Endpoint) validate(side string) error {
	for _, s := range [...]struct{ field, v string }{
		{"_namespace", e.Namespace}, {"_pod", e.Pod}, {"_workload", e.Workload}, {"_workload_kind", e.WorkloadKind},
	} {
		if err := checkSideName(side, s.field, s.v); err != nil {
			return err
		}
	}
	for k, v := range e.Labels {
		if err := checkSideName(side, "_labels", k); err != nil {
			return err
		}
		if err := checkSideName(side, "_labels", v); err != nil {
			return err
		}
	}
	return nil
}

// checkSideName is CheckName for a field of an endpoint; the side is put
// in front of the field's name only when there is an error (a
// concatenation per field and flow cost an allocation each, 5% of serve's
// CPU on the live path).
func checkSideName(side, field, s string) error {
	err := CheckName(field, s)
	if fe, ok := err.(*FieldError); ok {
		fe.Field = side + field
	}
	return err
}

// CleanName returns s with every invalid UTF-8 sequence and control
// character replaced by U+FFFD: for text a source reports about itself
// (an nftables rule comment, a table name) that is kept, not rejected,
// because what it labels (a firewall counter) matters more than its label.
func CleanName(s string) string {
	if CheckName("", s) == nil {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || (r == utf8.RuneError && n <= 1) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		i += n
	}
	return b.String()
}
