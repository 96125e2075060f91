package ingest

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO without a writer: the open gives up when ctx ends; once open, a
// read waiting for the writer does too.
func TestOpenFileHonoursContextOnAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	f, err := OpenFile(ctx, fifo)
	if !errors.Is(err, context.DeadlineExceeded) || f != nil {
		t.Fatalf("open of a FIFO without a writer: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s to give up", d)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done := make(chan error, 1)
	go func() {
		f, err := OpenFile(ctx2, fifo)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = io.ReadAll(f)
		done <- err
	}()
	// A writer that opens and then writes nothing.
	var w *os.File
	deadline := time.Now().Add(5 * time.Second)
	for w == nil && time.Now().Before(deadline) {
		w, _ = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		time.Sleep(10 * time.Millisecond)
	}
	if w == nil {
		t.Fatal("the reader never opened the FIFO")
	}
	defer w.Close()
	time.Sleep(100 * time.Millisecond)
	cancel2()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read cut short by ctx reported no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read waiting on the FIFO ignored ctx")
	}
	// A regular file opens as with os.Open.
	reg := filepath.Join(t.TempDir(), "f")
	_ = os.WriteFile(reg, []byte("x"), 0o600)
	if f, err := OpenFile(context.Background(), reg); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
}
