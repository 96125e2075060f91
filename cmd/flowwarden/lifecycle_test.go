package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// events records what serve's components did, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) { e.mu.Lock(); e.got = append(e.got, s); e.mu.Unlock() }

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// fake is a component that records when it runs and when it returns: on
// ctx's end after linger (a source still handing over its last flows), or
// at once with fail.
func (e *events) fake(name string, linger time.Duration, fail error) runner {
	return runFunc(func(ctx context.Context) error {
		e.add("run " + name)
		if fail != nil {
			e.add("failed " + name)
			return fail
		}
		<-ctx.Done()
		time.Sleep(linger)
		e.add("returned " + name)
		return nil
	})
}

// testPlan is serve's plan with fake components; sourceErr makes the
// Hubble fake fail at once.
func testPlan(ev *events, log *slog.Logger, sourceErr error) *servePlan {
	// The sources linger when told to stop: were they told at the same
	// time as the writer or the database, those would return first.
	const linger = 50 * time.Millisecond
	return &servePlan{
		database:   ev.fake("database", 0, nil),
		openWriter: func() error { ev.add("open writer"); return nil },
		writer:     ev.fake("writer", 0, nil),
		findings:   []runner{ev.fake("findings store", 0, nil), ev.fake("alertmanager sender", 0, nil)},
		detectors:  []runner{ev.fake("engine clock", linger, nil)},
		startSources: func(context.Context) error {
			ev.add("resume sources")
			return nil
		},
		sources: []runner{ev.fake("hubble", linger, sourceErr), ev.fake("envoy", linger, nil), ev.fake("conntrack", linger, nil),
			ev.fake("nftables", linger, nil)},
		startWeb: func(context.Context) error {
			ev.add("listen")
			return nil
		},
		web:     ev.fake("http", linger, nil),
		flushed: func() { log.Info("writer flushed") },
		log:     log,
	}
}

// checkOrder fails unless every event in before happened before every
// event in after.
func checkOrder(t *testing.T, got []string, before, after []string) {
	t.Helper()
	last := -1
	for _, b := range before {
		i := slices.Index(got, b)
		if i < 0 {
			t.Fatalf("%q never happened: %q", b, got)
		}
		last = max(last, i)
	}
	for _, a := range after {
		i := slices.Index(got, a)
		if i < 0 {
			t.Fatalf("%q never happened: %q", a, got)
		}
		if i < last {
			t.Errorf("%q happened before all of %q: %q", a, before, got)
		}
	}
}

var (
	sourcesReturned = []string{"returned hubble", "returned envoy", "returned conntrack", "returned nftables"}
	storageReturned = []string{"returned writer", "returned findings store", "returned alertmanager sender"}
)

// TestServeStopsInDeclaredOrder: serve's lifecycle opens the writer's
// spool before the sources resume, and listens only after the sources
// were started; on cancel the HTTP server returns first, then every
// source, then the engine's clock, then the writer, the findings store and
// the sender, and the embedded database last. The shutdown logs come
// between the sources and the writer.
func TestServeStopsInDeclaredOrder(t *testing.T) {
	var ev events
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	plan := testPlan(&ev, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- plan.lifecycle().Run(ctx) }()
	waitUntil(t, 30*time.Second, "every component to run", func() bool {
		return len(ev.list()) == 3+1+3+1+5 // open, resume, listen, database, storage, clock, sources and http
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the lifecycle did not stop")
	}
	got := ev.list()
	checkOrder(t, got, []string{"open writer"}, []string{"resume sources"})
	checkOrder(t, got, []string{"resume sources"}, []string{"run hubble", "run envoy", "run conntrack", "run nftables", "listen"})
	checkOrder(t, got, []string{"listen"}, []string{"run http"})
	checkOrder(t, got, []string{"returned http"}, sourcesReturned)
	checkOrder(t, got, sourcesReturned, []string{"returned engine clock"})
	checkOrder(t, got, []string{"returned engine clock"}, storageReturned)
	checkOrder(t, got, storageReturned, []string{"returned database"})
	out := logs.String()
	stopping, flushed := strings.Index(out, "stopping: sources stopped, flushing the writer"), strings.Index(out, "writer flushed")
	if stopping < 0 || flushed < stopping {
		t.Errorf("shutdown logs missing or out of order:\n%s", out)
	}
}

// TestServeFailureStopsInOrder: a source that fails stops serve, in the
// same order, and its error is what Run returns.
func TestServeFailureStopsInOrder(t *testing.T) {
	var ev events
	boom := errors.New("hubble: bad certificate")
	plan := testPlan(&ev, slog.New(slog.DiscardHandler), boom)
	done := make(chan error, 1)
	go func() { done <- plan.lifecycle().Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Run returned %v, want the source's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a failed source did not stop serve")
	}
	got := ev.list()
	checkOrder(t, got, []string{"returned http"}, []string{"returned envoy", "returned conntrack", "returned nftables"})
	checkOrder(t, got, []string{"returned envoy", "returned conntrack", "returned nftables"}, []string{"returned engine clock"})
	checkOrder(t, got, []string{"returned engine clock"}, storageReturned)
	checkOrder(t, got, storageReturned, []string{"returned database"})
}

// TestServeStartFailureStopsWhatRuns: when the sources cannot start (the
// resume point is unreadable), no source runs and what already runs (the
// writer, the database) is stopped before Run returns the error.
func TestServeStartFailureStopsWhatRuns(t *testing.T) {
	var ev events
	plan := testPlan(&ev, slog.New(slog.DiscardHandler), nil)
	refused := errors.New("resume point: connection refused")
	plan.startSources = func(context.Context) error { return refused }
	err := plan.lifecycle().Run(context.Background())
	if !errors.Is(err, refused) {
		t.Fatalf("Run returned %v, want the start's error", err)
	}
	got := ev.list()
	for _, e := range got {
		if e == "listen" || strings.HasPrefix(e, "run ") && slices.Contains([]string{"hubble", "envoy", "conntrack", "nftables", "http"}, strings.TrimPrefix(e, "run ")) {
			t.Errorf("a source ran although the sources could not start: %q", got)
		}
	}
	checkOrder(t, got, storageReturned, []string{"returned database"})
}

// syncWriter serialises writes to w (the components log from their goroutines).
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
