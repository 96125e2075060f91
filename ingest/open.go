package ingest

import (
	"context"
	"os"
	"syscall"
	"time"
)

// OpenFile opens path for reading as os.Open does, but honours ctx while
// it waits: opening a named pipe (FIFO) blocks until a writer opens it, and
// reading it blocks until the writer writes. When ctx ends, a pending open
// gives up with ctx's error, and reads of an opened FIFO return an error.
func OpenFile(ctx context.Context, path string) (*os.File, error) {
	info, err := os.Stat(path)
	if err != nil || info.Mode()&os.ModeNamedPipe == 0 {
		return os.Open(path)
	}
	type opened struct {
		f   *os.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, err := os.Open(path)
		ch <- opened{f, err}
	}()
	select {
	case o := <-ch:
		if o.err == nil {
			// Go polls FIFOs: a deadline in the past ends a blocked read.
			context.AfterFunc(ctx, func() { _ = o.f.SetReadDeadline(time.Now()) })
		}
		return o.f, o.err
	case <-ctx.Done():
	}
	// The blocked open counts as the pipe's reader, so a non-blocking
	// writer can open it, which releases the open; then both are closed.
	w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		// Left to finish when a writer comes (the goroutine then exits).
		go func() {
			if o := <-ch; o.f != nil {
				o.f.Close()
			}
		}()
		return nil, ctx.Err()
	}
	w.Close()
	if o := <-ch; o.f != nil {
		o.f.Close()
	}
	return nil, ctx.Err()
}
