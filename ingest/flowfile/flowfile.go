// Package flowfile reads recorded flow files of every kind flowwarden
// knows, telling them apart by their content: Hubble JSON lines (the
// exporter's files, `hubble observe -o json`) and Istio/Envoy access logs
// (text or JSON), plain or gzip-compressed. Commands check every file with
// Check before they start anything, then read them with Read.
package flowfile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/envoy"
	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
)

// Kind is what a file holds.
type Kind int

const (
	// Unknown: tell by content.
	Unknown Kind = iota
	// Hubble JSON lines: {"flow": {...}, "node_name": ..., "time": ...}.
	Hubble
	// Envoy access log lines, Istio/Envoy text formats or JSON.
	Envoy
)

func (k Kind) String() string {
	switch k {
	case Hubble:
		return "Hubble JSON"
	case Envoy:
		return "Envoy access log"
	}
	return "unknown"
}

// File is one file to read and what it holds.
type File struct {
	Path string
	Kind Kind
	// From is where the file was named (a flag such as "--hubble-file", or
	// "argument"), for messages.
	From string
}

// sniffLines is how many non-empty lines Check reads to tell the kind.
const sniffLines = 5

// Check opens every file, reads its first lines and, for files of Unknown
// kind, tells the kind by content. It returns the files with their kind,
// Hubble files first (they teach the identity cache that attributes Envoy
// flows to pods), each group in the order given; and one error naming every
// file that cannot be read or whose kind cannot be told. "-" (standard
// input) is taken as it is, unread.
func Check(files []File) ([]File, error) {
	var errs []error
	out := make([]File, 0, len(files))
	for _, f := range files {
		if f.Path == "-" {
			if f.Kind == Unknown {
				errs = append(errs, fmt.Errorf("%s: standard input needs its kind: give it with --hubble-file - or --envoy-file -", f.From))
				continue
			}
			out = append(out, f)
			continue
		}
		if st, err := os.Stat(f.Path); err == nil && !st.IsDir() && !st.Mode().IsRegular() {
			// A named pipe or device: reading it to tell its kind would
			// consume what the reader needs, and it may have no writer yet.
			if f.Kind == Unknown {
				errs = append(errs, fmt.Errorf("%s %s: not a regular file, so its kind cannot be told by reading it: give it with --hubble-file or --envoy-file", f.From, f.Path))
				continue
			}
			out = append(out, f)
			continue
		}
		kind, lines, err := sniff(f.Path)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", f.From, f.Path, err))
			continue
		case f.Kind == Unknown && lines == 0:
			errs = append(errs, fmt.Errorf("%s %s: empty (no line to tell its kind by)", f.From, f.Path))
			continue
		case f.Kind == Unknown && kind == Unknown:
			errs = append(errs, fmt.Errorf("%s %s: neither Hubble JSON nor an Envoy access log in its first lines (if it is one, name its kind with --hubble-file or --envoy-file)", f.From, f.Path))
			continue
		case f.Kind == Unknown:
			f.Kind = kind
		}
		out = append(out, f)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(out, func(a, b File) int { return int(a.Kind) - int(b.Kind) })
	return out, nil
}

// open opens path, decompressing it when it is gzip (by its magic bytes,
// whatever its name), as the readers do.
func open(path string) (io.ReadCloser, error) {
	return ingest.OpenInput(context.Background(), path)
}

// sniff reads the first non-empty lines of path and tells their kind: the
// first line that is clearly one or the other decides. It also returns how
// many non-empty lines it read (0: the file is empty).
func sniff(path string) (Kind, int, error) {
	r, err := open(path)
	if err != nil {
		return Unknown, 0, err
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), envoy.MaxLineBytes+1)
	n := 0
	for n < sniffLines && sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		n++
		if k := kindOf(line); k != Unknown {
			return k, n, nil
		}
		if n == 1 && isFixture(line) {
			return Unknown, n, errFixture
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return Unknown, n, fmt.Errorf("read: %w", err)
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) && n == 0 {
		n = 1 // one line longer than any flow: not empty
	}
	return Unknown, n, nil
}

// errFixture refuses the detectors' compact test fixtures (the
// *.flows.jsonl.gz of testdata/scenarios), which look like flow files.
var errFixture = errors.New("compact flow records of the detectors' tests (analyze/analyzetest), not Hubble JSON nor an Envoy access log: no command reads them")

// isFixture tells analyzetest's compact records by their time and address
// keys.
func isFixture(line []byte) bool {
	var obj map[string]json.RawMessage
	if line[0] != '{' || json.Unmarshal(line, &obj) != nil {
		return false
	}
	for _, k := range []string{"t", "sip", "dip"} {
		if _, ok := obj[k]; !ok {
			return false
		}
	}
	return true
}

// hubbleKeys are the top-level keys of Hubble's JSON records
// (observer.GetFlowsResponse: flows and the other events of an export).
var hubbleKeys = []string{"flow", "lost_events", "agent_event", "debug_event", "node_status"}

// envoyKeys are fields of Istio's and Envoy's JSON access-log formats.
var envoyKeys = []string{"start_time", "response_code", "upstream_cluster", "upstream_host", "downstream_remote_address", "authority", "bytes_sent"}

func kindOf(line []byte) Kind {
	if line[0] == '{' {
		var obj map[string]json.RawMessage
		if json.Unmarshal(line, &obj) != nil {
			return Unknown
		}
		for _, k := range hubbleKeys {
			if _, ok := obj[k]; ok {
				return Hubble
			}
		}
		for _, k := range envoyKeys {
			if _, ok := obj[k]; ok {
				return Envoy
			}
		}
		return Unknown
	}
	if _, err := envoy.ParseText(string(line)); err == nil {
		return Envoy
	}
	return Unknown
}

// Options tune Read.
type Options struct {
	// Workers is the number of goroutines decoding a Hubble file (0 or 1: in
	// file order).
	Workers int
	// Window bounds the flows' times (the zero value: only flows too far in
	// the future are refused, so old recordings import).
	Window ingest.TimeWindow
}

// Read reads one file to its end into sink, counting in stats. Hubble
// flows also teach identities (when not nil) who owns each pod address;
// Envoy flows are attributed to pods from it.
func Read(ctx context.Context, f File, opt Options, identities *ingest.IdentityCache, sink ingest.Sink, stats *ingest.Stats) error {
	switch f.Kind {
	case Hubble:
		if identities != nil {
			sink = ingest.Fanout{identities, sink}
		}
		if f.Path == "-" {
			return hubble.ReadLines(ctx, os.Stdin, "stdin", sink, stats)
		}
		if strings.HasSuffix(f.Path, ".gz") || !regular(f.Path) || !isGzip(f.Path) {
			return hubble.ReadFileConfig(ctx, f.Path, hubble.FileConfig{Workers: opt.Workers, Window: opt.Window}, sink, stats)
		}
		// Compressed under another name: decompressed here, read in order
		// (with the default window).
		r, err := open(f.Path)
		if err != nil {
			return fmt.Errorf("open Hubble file: %w", err)
		}
		defer r.Close()
		return hubble.ReadLines(ctx, r, f.Path, sink, stats)
	case Envoy:
		if identities != nil {
			sink = ingest.Enrich(identities, sink)
		}
		if f.Path == "-" || !regular(f.Path) {
			// Standard input, or a named pipe (opened so that ctx ends the wait).
			return envoy.ReadFileWindow(ctx, f.Path, opt.Window, sink, stats)
		}
		r, err := open(f.Path)
		if err != nil {
			return fmt.Errorf("open access log: %w", err)
		}
		defer r.Close()
		return envoy.ReadLinesWindow(ctx, r, f.Path, opt.Window, sink, stats)
	}
	return fmt.Errorf("%s: unknown kind of file (run Check first)", f.Path)
}

// regular reports whether path is a regular file (not a pipe or device).
func regular(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func isGzip(path string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	var magic [2]byte
	n, _ := io.ReadFull(fh, magic[:])
	return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b
}

// errFirstFlow stops FirstFlow's read once it has the first flow.
var errFirstFlow = errors.New("first flow read")

// FirstFlow returns the time of the first flow Read gives from f (false:
// the file holds none). It reads only as far as that flow.
func FirstFlow(ctx context.Context, f File) (time.Time, bool, error) {
	var first time.Time
	var found bool
	sink := ingest.SinkFunc(func(_ context.Context, flows ...schema.Flow) error {
		if len(flows) == 0 {
			return nil
		}
		first, found = flows[0].Time, true
		return errFirstFlow
	})
	var stats ingest.Stats
	if err := Read(ctx, f, Options{Workers: 1}, nil, sink, &stats); err != nil && !errors.Is(err, errFirstFlow) {
		return time.Time{}, false, fmt.Errorf("%s: %w", f.Path, err)
	}
	return first, found, nil
}

// InTimeOrder orders checked files (Check's result) for reading as
// recordings one after the other: within each kind (Hubble files first,
// as Check puts them), the regular files by the time of their first flow,
// so that the rotated parts of one recording (an exporter's hubble.log,
// hubble.log.1, hubble.log.2, named in whatever order) are read oldest
// first and each part continues the one before it; files that hold no
// flow come first (they change nothing). Standard input and pipes, which
// cannot be read twice, come after the regular files of their kind, in
// the order given. Reads each regular file up to its first flow.
func InTimeOrder(ctx context.Context, files []File) ([]File, error) {
	type timed struct {
		File
		first  time.Time
		stream bool
	}
	ts := make([]timed, len(files))
	for i, f := range files {
		ts[i] = timed{File: f, stream: f.Path == "-" || !regular(f.Path)}
		if ts[i].stream {
			continue
		}
		first, _, err := FirstFlow(ctx, f)
		if err != nil {
			return nil, err
		}
		ts[i].first = first
	}
	slices.SortStableFunc(ts, func(a, b timed) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		if a.stream != b.stream {
			if a.stream {
				return 1
			}
			return -1
		}
		return a.first.Compare(b.first)
	})
	out := make([]File, len(ts))
	for i, t := range ts {
		out[i] = t.File
	}
	return out, nil
}
