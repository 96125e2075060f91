package ingest

import (
	"bufio"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
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

// OpenInput opens a flow file for reading: as OpenFile (a FIFO honours
// ctx), refusing a directory, and decompressing it when it is gzip, told by
// its magic bytes whatever its name. Closing it closes the file.
func OpenInput(ctx context.Context, path string) (io.ReadCloser, error) {
	f, err := OpenFile(ctx, path)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: path, Err: syscall.EISDIR}
	}
	br := bufio.NewReaderSize(f, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, &fs.PathError{Op: "gunzip", Path: path, Err: err}
		}
		return input{gz, func() error { gz.Close(); return f.Close() }}, nil
	}
	return input{br, f.Close}, nil
}

type input struct {
	io.Reader
	close func() error
}

func (r input) Close() error { return r.close() }
