package main

import (
	"fmt"
	"io"
	"os"
)

// readSmallFile reads a file of at most limit bytes, refusing a larger one
// before reading it (a config or token file is small; a huge one is a
// mistake or an attack, and reading it whole would take its size in memory).
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Mode().IsRegular() && info.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", path, info.Size(), limit)
	}
	raw, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("%s is more than the %d bytes allowed", path, limit)
	}
	return raw, nil
}
