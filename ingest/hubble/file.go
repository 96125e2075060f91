package hubble

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

// RejectReason classifies a decode error into a short, stable reason for
// counting (the error itself carries the detail).
func RejectReason(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errEOF):
		return "truncated JSON"
	case strings.Contains(msg, "exceeds the"):
		return "line too long"
	case strings.Contains(msg, "invalid UTF-8"):
		return "invalid UTF-8"
	case strings.Contains(msg, "invalid address"):
		return "invalid IP address"
	case strings.Contains(msg, "timestamp"), strings.Contains(msg, "no time"):
		return "invalid or missing time"
	case strings.Contains(msg, "nesting deeper"):
		return "JSON nested too deeply"
	case strings.Contains(msg, "out of range"), strings.Contains(msg, "not an unsigned integer"), strings.Contains(msg, "enum"):
		return "wrong field type or value"
	}
	return "malformed JSON"
}

// batchSize is how many flows the readers hand to the sink at once.
const batchSize = 1024

// ReadFile reads a Hubble JSON-lines file (gzip when the name ends in .gz) to
// its end and writes its flows to sink. Bad lines are counted in stats with
// their reason and line number; they never stop the file. It returns early
// only when ctx ends, the file cannot be read, or the sink fails.
func ReadFile(ctx context.Context, path string, sink ingest.Sink, stats *ingest.Stats) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open Hubble file: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	return ReadLines(ctx, r, path, sink, stats)
}

// ReadLines is ReadFile over any reader; name labels rejection examples.
func ReadLines(ctx context.Context, r io.Reader, name string, sink ingest.Sink, stats *ingest.Stats) error {
	br := bufio.NewReaderSize(r, 256<<10)
	d := NewDecoder()
	batch := make([]schema.Flow, 0, batchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := sink.Write(ctx, batch...); err != nil {
			return err
		}
		for range batch {
			stats.Accept()
		}
		batch = batch[:0]
		return nil
	}
	var long []byte
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: collect it up to the limit, then
			// discard the rest of it.
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				if len(long) <= MaxLineBytes {
					long = append(long, line...)
				}
			}
			line = long
		}
		if len(line) > 0 {
			if lineNo%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			line = bytes.TrimRight(line, "\r\n")
			if len(bytes.TrimSpace(line)) > 0 {
				stats.Read()
				flow, derr := d.Decode(line)
				switch {
				case derr == nil:
					batch = append(batch, flow)
					if len(batch) == cap(batch) {
						if err := flush(); err != nil {
							return err
						}
					}
				case errors.Is(derr, ErrNoFlow):
					stats.Skip()
				default:
					stats.Reject(RejectReason(derr), fmt.Sprintf("%s:%d: %v", name, lineNo, derr))
				}
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
}
