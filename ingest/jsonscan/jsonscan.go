// Package jsonscan is a minimal, allocation-free JSON reader for one line
// at a time: the fast paths of the Hubble and Envoy decoders are built on it.
// It validates the syntax of everything it reads or skips; strings are
// returned as slices of the input (unescaped into a scratch buffer only when
// they contain escapes), valid until the next call.
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a minimal, allocation-free JSON reader over one line. It
// validates the syntax of everything it reads or skips; values are returned
// as slices of the input (strings are unescaped into a scratch buffer only
// when they contain escapes).
type Scanner struct {
	b       []byte
	i       int
	scratch []byte
	depth   int
}

// Reset points the scanner at a new input, keeping its scratch buffer.
func (s *Scanner) Reset(b []byte) {
	*s = Scanner{b: b, scratch: s.scratch}
}

// Pos is the offset of the next byte to read.
func (s *Scanner) Pos() int { return s.i }

// Bytes returns the input between two offsets.
func (s *Scanner) Bytes(from, to int) []byte { return s.b[from:to] }

// SkipSpace advances past white space.
func (s *Scanner) SkipSpace() { s.ws() }

// MaxDepth bounds nesting so hostile input cannot exhaust the stack.
const MaxDepth = 64

// ErrEOF reports input that ends inside a value: a truncated line.
var ErrEOF = errors.New("unexpected end of input (truncated line?)")

func (s *Scanner) Errf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *Scanner) ws() {
	// Compact JSON, what the exporters write, has no space between tokens:
	// one comparison settles it.
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return
	}
	s.wsSlow()
}

func (s *Scanner) wsSlow() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *Scanner) Peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *Scanner) Expect(c byte) error {
	s.ws()
	if s.i >= len(s.b) {
		return ErrEOF
	}
	if s.b[s.i] != c {
		return s.Errf("expected %q, found %q", c, s.b[s.i])
	}
	s.i++
	return nil
}

// null consumes a JSON null if it is next.
func (s *Scanner) Null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// object iterates the members of an object, calling fn with each key; fn
// must consume the value.
func (s *Scanner) Object(fn func(key []byte) error) error {
	if err := s.Expect('{'); err != nil {
		return err
	}
	s.depth++
	if s.depth > MaxDepth {
		return s.Errf("nesting deeper than %d", MaxDepth)
	}
	defer func() { s.depth-- }()
	if s.Peek() == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.Str()
		if err != nil {
			return err
		}
		if err := s.Expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		case 0:
			return ErrEOF
		default:
			return s.Errf("expected ',' or '}' in object, found %q", s.b[s.i])
		}
	}
}

// array iterates the elements of an array; fn must consume each element.
func (s *Scanner) Array(fn func() error) error {
	if err := s.Expect('['); err != nil {
		return err
	}
	s.depth++
	if s.depth > MaxDepth {
		return s.Errf("nesting deeper than %d", MaxDepth)
	}
	defer func() { s.depth-- }()
	if s.Peek() == ']' {
		s.i++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		case 0:
			return ErrEOF
		default:
			return s.Errf("expected ',' or ']' in array, found %q", s.b[s.i])
		}
	}
}

// str reads a string. The result aliases the input or the scratch buffer and
// is valid until the next call.
func (s *Scanner) Str() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, ErrEOF
	}
	if s.b[s.i] != '"' {
		return nil, s.Errf("expected a string, found %q", s.b[s.i])
	}
	s.i++
	start := s.i
	ascii := true
	// Eight bytes at a time while none of them ends the string, starts an
	// escape or is a control character; the byte loop below takes over at
	// the word that holds one (it never misses one: the tests are exact
	// for the lowest such byte).
	for s.i+8 <= len(s.b) {
		x := binary.LittleEndian.Uint64(s.b[s.i:])
		if hasZeroByte(x^(ones*'"'))|hasZeroByte(x^(ones*'\\'))|hasByteLess(x, 0x20) != 0 {
			break
		}
		if x&(ones*0x80) != 0 {
			ascii = false
		}
		s.i += 8
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			out := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(out) {
				return nil, s.Errf("invalid UTF-8 in string")
			}
			return out, nil
		case c == '\\':
			return s.strEscaped(start)
		case c < 0x20:
			return nil, s.Errf("control character in string")
		case c >= 0x80:
			ascii = false
		}
		s.i++
	}
	return nil, ErrEOF
}

const ones = 0x0101010101010101

// hasZeroByte is non-zero when a byte of x is zero.
func hasZeroByte(x uint64) uint64 { return (x - ones) &^ x & (ones * 0x80) }

// hasByteLess is non-zero when a byte of x is below n (n <= 0x80).
func hasByteLess(x uint64, n uint64) uint64 { return (x - ones*n) &^ x & (ones * 0x80) }

func (s *Scanner) strEscaped(start int) ([]byte, error) {
	buf := append(s.scratch[:0], s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			s.scratch = buf
			if !utf8.Valid(buf) {
				return nil, s.Errf("invalid UTF-8 in string")
			}
			return buf, nil
		case c < 0x20:
			return nil, s.Errf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			s.i++
			continue
		}
		s.i++
		if s.i >= len(s.b) {
			return nil, ErrEOF
		}
		e := s.b[s.i]
		s.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				if len(s.b)-s.i >= 6 && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					s.i += 2
					r2, err := s.hex4()
					if err != nil {
						return nil, err
					}
					r = utf16.DecodeRune(r, r2)
				} else {
					r = utf8.RuneError
				}
			}
			if r == utf8.RuneError {
				return nil, s.Errf("invalid \\u escape (lone surrogate)")
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, s.Errf("invalid escape \\%c", e)
		}
	}
	return nil, ErrEOF
}

func (s *Scanner) hex4() (rune, error) {
	if len(s.b)-s.i < 4 {
		return 0, ErrEOF
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, s.Errf("invalid hex in \\u escape")
		}
	}
	s.i += 4
	return r, nil
}

// number reads a JSON number token and returns its text.
func (s *Scanner) Number() ([]byte, error) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		if s.i >= len(s.b) {
			return nil, ErrEOF
		}
		return nil, s.Errf("invalid number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, s.Errf("invalid number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, s.Errf("invalid number")
		}
	}
	return s.b[start:s.i], nil
}

// uint reads an unsigned integer given as a JSON number or a quoted decimal
// (as protojson accepts), bounded by max.
func (s *Scanner) Uint(max uint64) (uint64, error) {
	var tok []byte
	var err error
	if s.Peek() == '"' {
		tok, err = s.Str()
	} else {
		tok, err = s.Number()
	}
	if err != nil {
		return 0, err
	}
	v, perr := strconv.ParseUint(string(tok), 10, 64)
	if perr != nil {
		// protojson also accepts integral values in float notation ("1e3").
		f, ferr := strconv.ParseFloat(string(tok), 64)
		if ferr != nil || f < 0 || f != math.Trunc(f) || f > float64(max) {
			return 0, s.Errf("%q is not an unsigned integer", tok)
		}
		v = uint64(f)
	}
	if v > max {
		return 0, s.Errf("%d out of range (max %d)", v, max)
	}
	return v, nil
}

func (s *Scanner) Bool() (bool, error) {
	s.ws()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true, nil
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false, nil
	case s.i >= len(s.b):
		return false, ErrEOF
	}
	return false, s.Errf("expected true or false")
}

// Extent returns the offset just past the object or array that starts at
// the next non-space byte, found by matching brackets outside strings. It
// neither validates nor consumes what it passes over: a caller uses it to
// recognise bytes it has read and validated before (then Seek past them),
// and reads them with the validating methods otherwise. ok is false when
// the next value is not an object or array, or the input ends first.
func (s *Scanner) Extent() (end int, ok bool) {
	s.ws()
	b := s.b
	i := s.i
	if i >= len(b) || (b[i] != '{' && b[i] != '[') {
		return 0, false
	}
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case '"':
			// The closing quote: the next one not escaped, that is not
			// preceded by an odd run of backslashes.
			for {
				q := bytes.IndexByte(b[i+1:], '"')
				if q < 0 {
					return 0, false
				}
				i += 1 + q
				n := 0
				for j := i - 1; b[j] == '\\'; j-- {
					n++
				}
				if n%2 == 0 {
					break
				}
			}
		}
		i++
	}
	return 0, false
}

// Seek moves to offset i, which Extent returned: past a value the caller
// recognised.
func (s *Scanner) Seek(i int) { s.i = i }

// skip consumes and validates any JSON value.
func (s *Scanner) Skip() error {
	switch c := s.Peek(); {
	case c == '{':
		return s.Object(func([]byte) error { return s.Skip() })
	case c == '[':
		return s.Array(s.Skip)
	case c == '"':
		_, err := s.Str()
		return err
	case c == 't' || c == 'f':
		_, err := s.Bool()
		return err
	case c == 'n':
		if s.Null() {
			return nil
		}
		return s.Errf("invalid literal")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.Number()
		return err
	case c == 0:
		return ErrEOF
	default:
		return s.Errf("unexpected %q", c)
	}
}
