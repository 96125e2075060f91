package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/schema"
)

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// counterVecSum adds up every series of a counter vector.
func counterVecSum(cv *prometheus.CounterVec) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { cv.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			sum += d.GetCounter().GetValue()
		}
	}
	return sum
}

type schemaFinding = schema.Finding

// window is --since/--until of a command that reads stored history. Both take
// a duration back from now (30d, 12h, 1d12h) or a time (RFC 3339, or a date),
// as hubble observe's do.
type window struct{ since, until string }

func (w *window) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&w.since, "since", "", what+" from this far back (30d, 24h) or from this time (RFC 3339: 2026-11-01T00:00:00Z, or a date)")
	cmd.Flags().StringVar(&w.until, "until", "", "with --since: end of the window, a duration back from now or a time (default: now)")
}

func (w *window) given() bool { return w.since != "" }

// bounds resolves the window at now; to is the zero time when --until is
// not given (up to now, and whatever arrives while reading).
func (w *window) bounds(now time.Time) (from, to time.Time, err error) {
	if w.since == "" {
		if w.until != "" {
			return from, to, errors.New("--until needs --since")
		}
		return from, to, errors.New("no --since")
	}
	if from, err = parseWhen(w.since, now, "--since"); err != nil {
		return from, to, err
	}
	if w.until != "" {
		if to, err = parseWhen(w.until, now, "--until"); err != nil {
			return from, to, err
		}
		if !from.Before(to) {
			return from, to, fmt.Errorf("--since %s is not before --until %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
	}
	return from, to, nil
}

// parseWhen reads a time (RFC 3339, or a date) or a duration back from now.
func parseWhen(s string, now time.Time, flag string) (time.Time, error) {
	if d, ok := parseAgo(s); ok {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%s %s: want a positive duration", flag, s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: want a duration (24h) or a time (2026-03-02T09:00:00Z); durations take d for days (30d)", flag, s)
}

// parseAgo is time.ParseDuration with days: 30d, 1d12h.
func parseAgo(s string) (time.Duration, bool) {
	var d time.Duration
	rest := s
	if days, after, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, false
		}
		d, rest = time.Duration(n)*24*time.Hour, after
	}
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil {
			return 0, false
		}
		d += x
	}
	return d, true
}
