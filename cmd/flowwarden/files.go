package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/ingest/flowfile"
)

// fileArgs are the recorded flow files a command reads: after --hubble-file
// or --envoy-file (repeatable), and as arguments, whose kind is told by
// content. `--hubble-file a b c` gives a by the flag and b, c as arguments,
// so shell globs work either way.
type fileArgs struct {
	hubble, envoy []string
	args          []string
}

func (fa *fileArgs) flags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&fa.hubble, "hubble-file", nil,
		"Hubble JSON-lines `FILE`: the exporter's files or hubble observe -o json output (repeatable; files given as arguments are told apart by content; gzip read compressed, told by content; - for stdin)")
	cmd.Flags().StringArrayVar(&fa.envoy, "envoy-file", nil,
		"Istio/Envoy access log `FILE`, text or JSON (repeatable; gzip read compressed, told by content; - for stdin)")
}

// given reports whether any file was named.
func (fa *fileArgs) given() bool { return len(fa.hubble)+len(fa.envoy)+len(fa.args) > 0 }

// check opens every file before anything starts and returns them with
// their kind, Hubble first; its error names every file that cannot be read.
func (fa *fileArgs) check() ([]flowfile.File, error) {
	var files []flowfile.File
	for _, p := range fa.hubble {
		files = append(files, flowfile.File{Path: p, Kind: flowfile.Hubble, From: "--hubble-file"})
	}
	for _, p := range fa.envoy {
		files = append(files, flowfile.File{Path: p, Kind: flowfile.Envoy, From: "--envoy-file"})
	}
	for _, p := range fa.args {
		files = append(files, flowfile.File{Path: p, From: "file"})
	}
	return flowfile.Check(files)
}

// summarize writes a command's summary line to stderr: as a line of text,
// or, with --log-format json (where every line on stderr is a JSON record),
// as a log record with attrs.
func (g *globals) summarize(text, msg string, attrs ...any) {
	if g.logFormat == "json" {
		g.log.Info(msg, attrs...)
		return
	}
	fmt.Fprintln(g.stderr, text)
}
