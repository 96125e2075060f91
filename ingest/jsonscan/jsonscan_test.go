package jsonscan

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// value reads any JSON value with the scanner into what encoding/json
// produces with UseNumber: map[string]any, []any, string, json.Number,
// bool, nil.
func value(s *Scanner) (any, error) {
	switch c := s.Peek(); {
	case c == '{':
		m := map[string]any{}
		err := s.Object(func(key []byte) error {
			k := string(key)
			v, err := value(s)
			m[k] = v
			return err
		})
		return m, err
	case c == '[':
		a := []any{}
		err := s.Array(func() error {
			v, err := value(s)
			a = append(a, v)
			return err
		})
		return a, err
	case c == '"':
		b, err := s.Str()
		return string(b), err
	case c == 't' || c == 'f':
		return s.Bool()
	case c == 'n':
		if s.Null() {
			return nil, nil
		}
		return nil, s.Errf("invalid literal")
	default:
		b, err := s.Number()
		return json.Number(b), err
	}
}

// decode reads one whole document: a value and nothing after it.
func decode(s *Scanner, in []byte) (any, error) {
	s.Reset(in)
	v, err := value(s)
	if err != nil {
		return nil, err
	}
	if s.SkipSpace(); s.Pos() != len(in) {
		return nil, s.Errf("data after the value")
	}
	return v, nil
}

// skipDoc validates one whole document with Skip.
func skipDoc(s *Scanner, in []byte) error {
	s.Reset(in)
	if err := s.Skip(); err != nil {
		return err
	}
	if s.SkipSpace(); s.Pos() != len(in) {
		return s.Errf("data after the value")
	}
	return nil
}

// refusedOnPurpose: inputs encoding/json reads that the scanner refuses by
// design: invalid UTF-8 and lone surrogates (encoding/json substitutes
// U+FFFD), nesting deeper than MaxDepth.
func refusedOnPurpose(err error) bool {
	m := err.Error()
	return strings.Contains(m, "UTF-8") || strings.Contains(m, "surrogate") || strings.Contains(m, "nesting")
}

// oracle compares the scanner with encoding/json on one input: the same
// value when both read it, the same verdict otherwise (but for the
// refusals on purpose), and Skip agrees with the value reader.
func oracle(t *testing.T, s *Scanner, in []byte) {
	t.Helper()
	got, gerr := decode(s, in)
	serr := skipDoc(s, in)
	if (gerr == nil) != (serr == nil) {
		t.Fatalf("%q: reading says %v, Skip says %v", in, gerr, serr)
	}
	var want any
	var werr error
	if !json.Valid(in) {
		werr = errors.New("not valid JSON")
	} else {
		d := json.NewDecoder(strings.NewReader(string(in)))
		d.UseNumber()
		werr = d.Decode(&want)
	}
	switch {
	case gerr == nil && werr != nil:
		t.Fatalf("%q: scanner accepted what encoding/json refuses (%v)", in, werr)
	case gerr == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("%q:\nscanner       %#v\nencoding/json %#v", in, got, want)
	case gerr != nil && werr == nil && !refusedOnPurpose(gerr):
		t.Fatalf("%q: scanner refused (%v) what encoding/json reads", in, gerr)
	case gerr != nil && werr == nil && strings.Contains(gerr.Error(), "UTF-8") && utf8.Valid(in):
		t.Fatalf("%q: refused as invalid UTF-8 but it is valid (%v)", in, gerr)
	}
}

var cases = []string{
	`{}`, `[]`, ` { "a" : [ 1 , -2.5e+3 , 0 , 0.0 , 1E9 ] , "b" : null } `, `"plain"`, `"esc \" \\ \/ \b \f \n \r \t"`,
	`"\u00e9\u4e2d\ud83d\ude00"`, `"é中😀"`, `true`, `false`, `null`, `-0`, `12345678901234567890123`,
	`{"a":{"b":{"c":[[[]]]}}}`, `{"dup":1,"dup":2}`, `[1,"two",{"3":[true,false,null]}]`,
	// refused by both
	``, ` `, `{`, `[`, `"open`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `01`, `1.`, `.5`, `1e`, `-`, `+1`,
	`tru`, `nul`, `nulll`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"tab\there\"", `{"a":1}x`, `{} {}`, `[1]]`, `{"a" 1}`,
	`{1:2}`, `'s'`, "\x00", `NaN`, `Infinity`,
	// refused on purpose (encoding/json substitutes U+FFFD)
	"\"\xff\"", `"\ud800"`, `"\ud800\u0041"`, `"\udc00"`, "\"\\n\xff\"",
}

// TestAgainstEncodingJSON: the scanner reads every case as encoding/json does.
func TestAgainstEncodingJSON(t *testing.T) {
	var s Scanner
	for _, c := range cases {
		oracle(t, &s, []byte(c))
	}
}

// TestStrWordBoundaries: strings are scanned eight bytes at a time; a
// quote, an escape, a control character or a non-ASCII byte (valid UTF-8 or
// not) is found at every offset around and across word boundaries, and
// read as encoding/json reads it.
func TestStrWordBoundaries(t *testing.T) {
	var s Scanner
	specials := []string{`\"`, `\n`, `\u00e9`, "\t", "\x1f", "\x7f", " ", "~", "é", "中", "😀", "\xff", "\xc3"}
	for _, sp := range specials {
		for pre := range 20 {
			for _, post := range []int{0, 1, 7, 8, 9, 17} {
				in := `"` + strings.Repeat("a", pre) + sp + strings.Repeat("b", post) + `"`
				oracle(t, &s, []byte(in))
				oracle(t, &s, []byte(`{"k":`+in+`,"`+strings.Repeat("c", pre)+`":1}`))
				oracle(t, &s, []byte(in[:len(in)-1])) // unterminated
			}
		}
	}
}

// TestDepthBound: nesting at MaxDepth is read, one deeper is refused
// rather than recursed into.
func TestDepthBound(t *testing.T) {
	var s Scanner
	ok := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if err := skipDoc(&s, []byte(ok)); err != nil {
		t.Fatalf("depth %d refused: %v", MaxDepth, err)
	}
	deep := strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1)
	if err := skipDoc(&s, []byte(deep)); err == nil || !strings.Contains(err.Error(), "nesting") {
		t.Fatalf("depth %d: %v, want a nesting error", MaxDepth+1, err)
	}
	// The bound counts open containers, not containers read so far.
	wide := "[" + strings.Repeat("[],", 1000) + "[]]"
	if err := skipDoc(&s, []byte(wide)); err != nil {
		t.Fatalf("1001 sibling arrays refused: %v", err)
	}
}

// TestTruncated: every proper prefix of a document is refused, and the
// error is ErrEOF when the input ends between tokens or inside a string.
func TestTruncated(t *testing.T) {
	doc := `{"k":"v\u00e9","n":-1.5e3,"a":[true,false,null],"o":{}}`
	var s Scanner
	for i := 0; i < len(doc); i++ {
		if err := skipDoc(&s, []byte(doc[:i])); err == nil {
			t.Fatalf("prefix %q accepted", doc[:i])
		}
	}
	for _, in := range []string{`{`, `{"a":`, `["x`, `[1,`, `{"a":[`, `"\`, `"\u00`} {
		if err := skipDoc(&s, []byte(in)); !errors.Is(err, ErrEOF) {
			t.Errorf("%q: %v, want ErrEOF", in, err)
		}
	}
}

// TestStrAliasesAndScratch: a string without escapes is a slice of the
// input (no copy); one with escapes is unescaped into the scratch buffer,
// which is reused across Reset.
func TestStrAliasesAndScratch(t *testing.T) {
	in := []byte(`"abc"`)
	var s Scanner
	s.Reset(in)
	b, err := s.Str()
	if err != nil || string(b) != "abc" || &b[0] != &in[1] {
		t.Fatalf("plain string %q (%v) does not alias the input", b, err)
	}
	s.Reset([]byte(`"a\nb"`))
	if b, err = s.Str(); err != nil || string(b) != "a\nb" {
		t.Fatalf("escaped string %q (%v)", b, err)
	}
	doc := []byte(`{"k":"a\tb","n":[1,2,{"x":null}]}`)
	allocs := testing.AllocsPerRun(100, func() {
		s.Reset(doc)
		if err := s.Skip(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Skip allocates %.0f times per document, want 0", allocs)
	}
}

// TestUint: integers as numbers or quoted decimals, integral floats, bounds.
func TestUint(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  uint64
		want uint64
		ok   bool
	}{
		{`42`, 100, 42, true}, {`"42"`, 100, 42, true}, {`1e2`, 100, 100, true}, {`101`, 100, 0, false},
		{`-1`, 100, 0, false}, {`1.5`, 100, 0, false}, {`"x"`, 100, 0, false}, {`18446744073709551615`, 1<<64 - 1, 1<<64 - 1, true},
		{`1e3`, 999, 0, false},
	} {
		var s Scanner
		s.Reset([]byte(c.in))
		v, err := s.Uint(c.max)
		if (err == nil) != c.ok || (c.ok && v != c.want) {
			t.Errorf("Uint(%s, max %d) = %d, %v; want %d ok=%v", c.in, c.max, v, err, c.want, c.ok)
		}
	}
}

// FuzzScanner: on any input the scanner and encoding/json agree (same value
// or both refuse, but for the refusals on purpose), and Skip agrees with
// reading the value.
func FuzzScanner(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c))
	}
	var s Scanner
	f.Fuzz(func(t *testing.T, in []byte) {
		oracle(t, &s, in)
	})
}

// TestExtent: Extent finds the end Skip finds for every valid object and
// array (brackets and escaped quotes inside strings included), moves
// nothing, and reports no extent for scalars and truncated input.
func TestExtent(t *testing.T) {
	valid := []string{
		`{}`, `[]`, ` {"a":1}`, `{"a":[1,{"b":"}"}],"c":"]"}`, `["\"", "\\", "\\\"]", {"x":"\\\\"}]`,
		`{"k":"a\\\"}b","l":["{","["]}`, `{"ü":"\u00fc}"}`, `[[[]],[{}]]`,
	}
	for _, v := range valid {
		var s Scanner
		s.Reset([]byte(v + `,"after"`))
		end, ok := s.Extent()
		if !ok {
			t.Fatalf("Extent(%s): none", v)
		}
		if s.Pos() != strings.IndexFunc(v, func(r rune) bool { return r != ' ' }) {
			t.Fatalf("Extent(%s) moved the scanner to %d", v, s.Pos())
		}
		if err := s.Skip(); err != nil {
			t.Fatalf("Skip(%s): %v", v, err)
		}
		if end != s.Pos() {
			t.Fatalf("Extent(%s) = %d, Skip ends at %d", v, end, s.Pos())
		}
		s.Reset([]byte(v))
		end, _ = s.Extent()
		s.Seek(end)
		if s.Peek() != 0 {
			t.Fatalf("Seek(%d) in %s left %q", end, v, s.Bytes(s.Pos(), len(v)))
		}
	}
	for _, v := range []string{``, `1`, `"{}"`, `null`, `{"a":1`, `["]`, `{"a":"\"}`, `[[]`} {
		var s Scanner
		s.Reset([]byte(v))
		if end, ok := s.Extent(); ok {
			t.Fatalf("Extent(%s) = %d, want none", v, end)
		}
	}
}
