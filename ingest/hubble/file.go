package hubble

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/ingest/jsonscan"
	"github.com/flowwarden/flowwarden/schema"
)

// RejectReason classifies a decode error into a short, stable reason for
// counting (the error itself carries the detail).
func RejectReason(err error) string {
	msg := err.Error()
	var fe *schema.FieldError
	switch {
	case errors.As(err, &fe):
		return fe.Reason
	case errors.Is(err, jsonscan.ErrEOF):
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

// ReadFile reads a Hubble JSON-lines file (gzip told by its magic bytes) to
// its end and writes its flows to sink, decoding on `workers` goroutines
// (0 or 1: in order, on the caller's goroutine). Bad lines are counted in
// stats with their reason and line number; they never stop the file. It
// returns early only when ctx ends, the file cannot be read, or the sink
// fails. A file that cannot be read to its end (a truncated or corrupt
// .gz, a read error) still has every complete line before the failure
// decoded and delivered; the error is returned after that. The path "-" is
// standard input.
func ReadFile(ctx context.Context, path string, workers int, sink ingest.Sink, stats *ingest.Stats) error {
	return ReadFileConfig(ctx, path, FileConfig{Workers: workers}, sink, stats)
}

// FileConfig says how ReadFileConfig reads a file.
type FileConfig struct {
	// Workers decode in parallel (0 or 1: in order, on the caller's goroutine).
	Workers int
	// Window bounds the flows' times; the zero value refuses only flows
	// more than ingest.DefaultMaxSkew in the future, so old recordings
	// import.
	Window ingest.TimeWindow
}

// ReadFileConfig is ReadFile with a time window.
func ReadFileConfig(ctx context.Context, path string, cfg FileConfig, sink ingest.Sink, stats *ingest.Stats) error {
	workers := cfg.Workers
	if path == "-" { // standard input, in order (hubble observe -o jsonpb | ...)
		return readLines(ctx, os.Stdin, "stdin", cfg.Window, sink, stats)
	}
	r, err := ingest.OpenInput(ctx, path)
	if err != nil {
		return fmt.Errorf("open Hubble file: %w", err)
	}
	defer r.Close()
	if workers > 1 {
		return readParallel(ctx, r, path, workers, cfg.Window, sink, stats)
	}
	return readLines(ctx, r, path, cfg.Window, sink, stats)
}

// lineReader yields lines with their numbers; lines longer than
// MaxLineBytes are returned truncated just past the limit (so they are
// rejected as too long) with the rest of the line discarded.
type lineReader struct {
	br     *bufio.Reader
	lineNo int
	long   []byte
	err    error // a read error met after the line last returned
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next line without its end of line, valid until the next
// call; io.EOF after the last one. A read error comes after the line read
// before it (which is cut short unless the error fell on a line end).
func (lr *lineReader) next() ([]byte, error) {
	if lr.err != nil {
		return nil, lr.err
	}
	for {
		line, err := lr.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			lr.long = append(lr.long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = lr.br.ReadSlice('\n')
				if len(lr.long) <= MaxLineBytes {
					lr.long = append(lr.long, line...)
				}
			}
			line = lr.long
		}
		if len(line) == 0 && err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("read: %w", err)
		}
		lr.lineNo++
		if err != nil && err != io.EOF {
			lr.err = fmt.Errorf("read: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(bytes.TrimSpace(line)) == 0 {
			if err == io.EOF {
				return nil, io.EOF
			}
			if lr.err != nil {
				return nil, lr.err
			}
			continue
		}
		return line, nil
	}
}

// decodeInto decodes one line, counting it, and appends a flow to batch.
func decodeInto(d *Decoder, line []byte, name string, lineNo int, window ingest.TimeWindow, batch []schema.Flow, stats *ingest.Stats) []schema.Flow {
	stats.Read()
	flow, err := d.Decode(line)
	if err == nil {
		err = window.Check(flow.Time)
	}
	switch {
	case err == nil:
		return append(batch, flow)
	case errors.Is(err, ErrNoFlow):
		stats.Skip()
	default:
		stats.Reject(RejectReason(err), fmt.Sprintf("%s:%d: %v", name, lineNo, err))
	}
	return batch
}

// ReadLines is ReadFile over any reader, in order, on the caller's
// goroutine; name labels rejection examples.
func ReadLines(ctx context.Context, r io.Reader, name string, sink ingest.Sink, stats *ingest.Stats) error {
	return readLines(ctx, r, name, ingest.TimeWindow{}, sink, stats)
}

func readLines(ctx context.Context, r io.Reader, name string, window ingest.TimeWindow, sink ingest.Sink, stats *ingest.Stats) error {
	lr := newLineReader(r)
	d := NewDecoder()
	batch := make([]schema.Flow, 0, batchSize)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return ingest.Deliver(ctx, sink, stats, batch...)
		}
		if err != nil {
			// What was read before the failure is kept.
			return errors.Join(ingest.Deliver(ctx, sink, stats, batch...), fmt.Errorf("%s: %w", name, err))
		}
		if lr.lineNo%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		batch = decodeInto(d, line, name, lr.lineNo, window, batch, stats)
		if len(batch) == cap(batch) {
			if err := ingest.Deliver(ctx, sink, stats, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
}

// chunk is a run of lines handed to a decoding worker.
type chunk struct {
	data    []byte
	ends    []int // end offset of each line in data
	lineNos []int
}

// readParallel reads lines on one goroutine and decodes them on several.
// Flows reach the sink in chunks of batchSize lines, not in file order.
func readParallel(ctx context.Context, r io.Reader, name string, workers int, window ingest.TimeWindow, sink ingest.Sink, stats *ingest.Stats) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	chunks := make(chan *chunk, workers)
	free := make(chan *chunk, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := NewDecoder()
			batch := make([]schema.Flow, 0, batchSize)
			for c := range chunks {
				start := 0
				for i, end := range c.ends {
					batch = decodeInto(d, c.data[start:end], name, c.lineNos[i], window, batch, stats)
					start = end
				}
				if err := ingest.Deliver(ctx, sink, stats, batch...); err != nil {
					cancel(err)
				}
				batch = batch[:0]
				select {
				case free <- c:
				default:
				}
			}
		}()
	}
	lr := newLineReader(r)
	var readErr error
	cur := &chunk{}
	for readErr == nil {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("%s: %w", name, err)
			break
		}
		cur.data = append(cur.data, line...)
		cur.ends = append(cur.ends, len(cur.data))
		cur.lineNos = append(cur.lineNos, lr.lineNo)
		if len(cur.ends) == batchSize {
			select {
			case chunks <- cur:
			case <-ctx.Done():
				readErr = context.Cause(ctx)
			}
			select {
			case cur = <-free:
				cur.data, cur.ends, cur.lineNos = cur.data[:0], cur.ends[:0], cur.lineNos[:0]
			default:
				cur = &chunk{}
			}
		}
	}
	// The last partial chunk goes to the workers even after a read error:
	// its lines are complete.
	if len(cur.ends) > 0 && ctx.Err() == nil {
		select {
		case chunks <- cur:
		case <-ctx.Done():
		}
	}
	close(chunks)
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// ReadFlows reads whole files, in order, into memory. Unlike ReadFile it
// treats a rejected line as an error: it is meant for recordings known to be
// clean (tests, scenario tooling), not for untrusted input.
func ReadFlows(ctx context.Context, paths ...string) ([]schema.Flow, error) {
	var flows []schema.Flow
	sink := ingest.SinkFunc(func(_ context.Context, fs ...schema.Flow) error {
		flows = append(flows, fs...)
		return nil
	})
	for _, p := range paths {
		var stats ingest.Stats
		if err := ReadFile(ctx, p, 1, sink, &stats); err != nil {
			return nil, err
		}
		if s := stats.Snapshot(); s.RejectedTotal() > 0 {
			return nil, fmt.Errorf("%s: %s", p, s)
		}
	}
	return flows, nil
}
