package hubble

import (
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
type scanner struct {
	b       []byte
	i       int
	scratch []byte
	depth   int
}

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 64

var errEOF = errors.New("unexpected end of input (truncated line?)")

func (s *scanner) errAt(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
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
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) expect(c byte) error {
	s.ws()
	if s.i >= len(s.b) {
		return errEOF
	}
	if s.b[s.i] != c {
		return s.errAt("expected %q, found %q", c, s.b[s.i])
	}
	s.i++
	return nil
}

// null consumes a JSON null if it is next.
func (s *scanner) null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// object iterates the members of an object, calling fn with each key; fn
// must consume the value.
func (s *scanner) object(fn func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	s.depth++
	if s.depth > maxDepth {
		return s.errAt("nesting deeper than %d", maxDepth)
	}
	defer func() { s.depth-- }()
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		case 0:
			return errEOF
		default:
			return s.errAt("expected ',' or '}' in object, found %q", s.b[s.i])
		}
	}
}

// array iterates the elements of an array; fn must consume each element.
func (s *scanner) array(fn func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	s.depth++
	if s.depth > maxDepth {
		return s.errAt("nesting deeper than %d", maxDepth)
	}
	defer func() { s.depth-- }()
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		case 0:
			return errEOF
		default:
			return s.errAt("expected ',' or ']' in array, found %q", s.b[s.i])
		}
	}
}

// str reads a string. The result aliases the input or the scratch buffer and
// is valid until the next call.
func (s *scanner) str() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, errEOF
	}
	if s.b[s.i] != '"' {
		return nil, s.errAt("expected a string, found %q", s.b[s.i])
	}
	s.i++
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			out := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(out) {
				return nil, s.errAt("invalid UTF-8 in string")
			}
			return out, nil
		case c == '\\':
			return s.strEscaped(start)
		case c < 0x20:
			return nil, s.errAt("control character in string")
		case c >= 0x80:
			ascii = false
		}
		s.i++
	}
	return nil, errEOF
}

func (s *scanner) strEscaped(start int) ([]byte, error) {
	buf := append(s.scratch[:0], s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			s.scratch = buf
			if !utf8.Valid(buf) {
				return nil, s.errAt("invalid UTF-8 in string")
			}
			return buf, nil
		case c < 0x20:
			return nil, s.errAt("control character in string")
		case c != '\\':
			buf = append(buf, c)
			s.i++
			continue
		}
		s.i++
		if s.i >= len(s.b) {
			return nil, errEOF
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
				return nil, s.errAt("invalid \\u escape (lone surrogate)")
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, s.errAt("invalid escape \\%c", e)
		}
	}
	return nil, errEOF
}

func (s *scanner) hex4() (rune, error) {
	if len(s.b)-s.i < 4 {
		return 0, errEOF
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
			return 0, s.errAt("invalid hex in \\u escape")
		}
	}
	s.i += 4
	return r, nil
}

// number reads a JSON number token and returns its text.
func (s *scanner) number() ([]byte, error) {
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
			return nil, errEOF
		}
		return nil, s.errAt("invalid number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, s.errAt("invalid number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, s.errAt("invalid number")
		}
	}
	return s.b[start:s.i], nil
}

// uint reads an unsigned integer given as a JSON number or a quoted decimal
// (as protojson accepts), bounded by max.
func (s *scanner) uint(max uint64) (uint64, error) {
	var tok []byte
	var err error
	if s.peek() == '"' {
		tok, err = s.str()
	} else {
		tok, err = s.number()
	}
	if err != nil {
		return 0, err
	}
	v, perr := strconv.ParseUint(string(tok), 10, 64)
	if perr != nil {
		// protojson also accepts integral values in float notation ("1e3").
		f, ferr := strconv.ParseFloat(string(tok), 64)
		if ferr != nil || f < 0 || f != math.Trunc(f) || f > float64(max) {
			return 0, s.errAt("%q is not an unsigned integer", tok)
		}
		v = uint64(f)
	}
	if v > max {
		return 0, s.errAt("%d out of range (max %d)", v, max)
	}
	return v, nil
}

func (s *scanner) boolean() (bool, error) {
	s.ws()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true, nil
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false, nil
	case s.i >= len(s.b):
		return false, errEOF
	}
	return false, s.errAt("expected true or false")
}

// skip consumes and validates any JSON value.
func (s *scanner) skip() error {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte) error { return s.skip() })
	case c == '[':
		return s.array(s.skip)
	case c == '"':
		_, err := s.str()
		return err
	case c == 't' || c == 'f':
		_, err := s.boolean()
		return err
	case c == 'n':
		if s.null() {
			return nil
		}
		return s.errAt("invalid literal")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	case c == 0:
		return errEOF
	default:
		return s.errAt("unexpected %q", c)
	}
}
