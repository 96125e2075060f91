package envoy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/jsonscan"
	"github.com/flowwarden/flowwarden/schema"
)

// MaxLineBytes is the longest access-log line accepted.
const MaxLineBytes = 256 << 10

// RejectReason classifies a parse error for counting.
func RejectReason(err error) string {
	var fe *schema.FieldError
	switch {
	case errors.As(err, &fe):
		return fe.Reason
	case errors.Is(err, ErrNotAccessLog):
		return "not an access log entry"
	case errors.Is(err, jsonscan.ErrEOF):
		return "truncated JSON"
	case strings.Contains(err.Error(), "invalid UTF-8"):
		return schema.ReasonUTF8
	case strings.Contains(err.Error(), "too long"):
		return "line too long"
	case strings.Contains(err.Error(), "time"):
		return "invalid time"
	case strings.Contains(err.Error(), "fields"), strings.Contains(err.Error(), "request"), strings.Contains(err.Error(), "quoted"):
		return "malformed text line"
	}
	return "wrong field type or value"
}

// ReasonCut counts the partial line a read error ended.
const ReasonCut = "line cut by a read error"

// ReadLines reads access-log lines to the end, writing flows to sink. On a
// read error the flows of the lines read before it are delivered first.
// Identities come from the sink (ingest.Enrich over the identity cache).
func ReadLines(ctx context.Context, r io.Reader, name string, sink ingest.Sink, stats *ingest.Stats) error {
	return ReadLinesWindow(ctx, r, name, ingest.TimeWindow{}, sink, stats)
}

// ReadLinesWindow is ReadLines that rejects flows outside window (the zero
// window refuses only flows more than ingest.DefaultMaxSkew in the future).
func ReadLinesWindow(ctx context.Context, r io.Reader, name string, window ingest.TimeWindow, sink ingest.Sink, stats *ingest.Stats) error {
	br := bufio.NewReaderSize(r, MaxLineBytes)
	var p Parser
	batch := make([]schema.Flow, 0, 256)
	flush := func() error {
		err := ingest.Deliver(ctx, sink, stats, batch...)
		batch = batch[:0]
		return err
	}
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		tooLong := false
		for errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			_, err = br.ReadSlice('\n')
		}
		// A line the read error cut short may still parse (the text
		// format's last fields are optional): it is rejected, not guessed.
		cut := err != nil && err != io.EOF && !tooLong
		if t := bytes.TrimSpace(line); len(t) > 0 || tooLong {
			stats.Read()
			a, perr := p.Parse(t)
			if perr == nil {
				perr = window.Check(a.StartTime)
			}
			switch {
			case cut:
				stats.Reject(ReasonCut, fmt.Sprintf("%s:%d: %v", name, lineNo, err))
			case tooLong:
				stats.Reject("line too long", fmt.Sprintf("%s:%d: longer than %d bytes", name, lineNo, MaxLineBytes))
			case perr != nil:
				stats.Reject(RejectReason(perr), fmt.Sprintf("%s:%d: %v", name, lineNo, perr))
			default:
				batch = append(batch, ToFlow(&a))
				if len(batch) == cap(batch) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			// The lines read before the failure are kept.
			return errors.Join(flush(), fmt.Errorf("read %s: %w", name, err))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ReadFile reads one access-log file to the end ("-": standard input; gzip
// is told by its magic bytes). A file that cannot be read to its end (a
// truncated .gz) has the flows of its complete lines delivered first.
func ReadFile(ctx context.Context, path string, sink ingest.Sink, stats *ingest.Stats) error {
	return ReadFileWindow(ctx, path, ingest.TimeWindow{}, sink, stats)
}

// ReadFileWindow is ReadFile that rejects flows outside window.
func ReadFileWindow(ctx context.Context, path string, window ingest.TimeWindow, sink ingest.Sink, stats *ingest.Stats) error {
	if path == "-" {
		return ReadLinesWindow(ctx, os.Stdin, "stdin", window, sink, stats)
	}
	r, err := ingest.OpenInput(ctx, path)
	if err != nil {
		return fmt.Errorf("open access log: %w", err)
	}
	defer r.Close()
	return ReadLinesWindow(ctx, r, path, window, sink, stats)
}
