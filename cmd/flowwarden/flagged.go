package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/flowwarden/flowwarden/analyze"
	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/ingest/flowfile"
	"github.com/flowwarden/flowwarden/schema"
)

// allowFlaggedHelp is --allow-flagged's help, the same on every command
// that recommends policies.
const allowFlaggedHelp = "learn allows from all observed traffic, including the edges the detectors flag as evidence of an attack (by default those are held back: not allowed, and listed with their finding)"

func allowFlaggedFlag(f *pflag.FlagSet, allow *bool) {
	f.BoolVar(allow, "allow-flagged", false, allowFlaggedHelp)
}

// detecting runs the detectors over the traffic src reads while learn
// reads it (the same pass for files, so standard input is read once, each
// file a recording: analyze.Recordings; over stored history, every flow
// of the window first, as detect --since does), and returns their
// findings.
func detecting(ctx context.Context, g *globals, src *flowSource, learn func() error) ([]schema.Finding, error) {
	var found analyze.Collector
	dcfg, err := detectorConfig(ctx, g, "", src.strictMTLS)
	if err != nil {
		return nil, err
	}
	if src.files.given() {
		// Each file is a recording, read in the order of their first flow
		// (rotated parts of one recording continue one another, whatever
		// order they were named in): one that goes back in time (files of
		// the same hour) gets detectors of its own.
		if src.checked == nil {
			if err := src.check(src.files.args); err != nil {
				return nil, err
			}
		}
		if src.checked, err = flowfile.InTimeOrder(ctx, src.checked); err != nil {
			return nil, err
		}
		recs, err := analyze.NewRecordings(dcfg, &found)
		if err != nil {
			return nil, err
		}
		src.tee = recs
		defer func() { src.tee = nil }()
		if err := learn(); err != nil {
			return nil, err
		}
		recs.Flush()
	} else {
		eng, err := analyze.NewEngine(dcfg, &found, nil)
		if err != nil {
			return nil, err
		}
		if _, err := detectStored(ctx, g, src.win, eng, &found); err != nil {
			return nil, fmt.Errorf("detectors over the stored history: %w", err)
		}
		if err := learn(); err != nil {
			return nil, err
		}
		eng.Flush()
	}
	findings := found.Findings()
	g.log.Info("detectors ran over the observed traffic", "findings", len(findings), "by_severity", bySeverity(findings))
	return findings, nil
}

// learnFlagged runs learn over src's traffic and, unless allow, the
// detectors with it: their findings go into cfg.Flagged, so the edges
// that are evidence of one are held back.
func learnFlagged(ctx context.Context, g *globals, src *flowSource, cfg *enforcer.Config, allow bool, learn func() error) error {
	if allow {
		cfg.Flagged = nil
		return learn()
	}
	findings, err := detecting(ctx, g, src, learn)
	if err != nil {
		return err
	}
	cfg.Flagged = findings
	return nil
}

// printHeldBack lists the edges held back for findings, one line each
// with the finding.
func printHeldBack(w io.Writer, res *enforcer.Result) {
	for _, s := range res.HeldBack() {
		for _, f := range s.Flags {
			fmt.Fprintf(w, "  held back: %s → %s %s/%d (%d flows): evidence of %s\n", peerString(s.Edge.From), peerString(s.Edge.To),
				s.Edge.Protocol, s.Edge.Port, s.Stats.Flows, f)
		}
	}
}
