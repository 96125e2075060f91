package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// runner is what serve runs: a component whose Run blocks until ctx ends
// and returns after its own goroutines stopped (and flushed what it holds).
type runner interface {
	Run(ctx context.Context) error
}

// runFunc adapts a function to runner.
type runFunc func(ctx context.Context) error

// Run calls f.
func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

// stage is a group of components that start together and stop together.
type stage struct {
	name string
	// start, when set, runs before the stage's components (after the
	// stages before it started); an error stops what already runs.
	start func(ctx context.Context) error
	parts []runner
	// stopping runs before the stage is told to stop; stopped after all
	// of its components returned.
	stopping, stopped func()
}

// lifecycle runs stages, as Akvorado's components: started in the order
// they were added, each after the one before it; stopped in the reverse
// order, each only after every component of the stage added after it has
// returned. The order is therefore declared once, by the order of add.
type lifecycle struct {
	stages []*stage
	log    *slog.Logger // stages started and stopped, at debug level; nil: none
}

func (l *lifecycle) add(s *stage) { l.stages = append(l.stages, s) }

func (l *lifecycle) debug(what, stage string) {
	if l.log != nil {
		l.log.Debug(what, "stage", stage)
	}
}

// running is one started stage.
type running struct {
	*stage
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// Run starts the stages and runs them until ctx ends or a component fails
// (returns an error other than context.Canceled; one that returns nil early
// just ends), then stops them in reverse order. It returns the errors of
// the start and of every component, joined.
func (l *lifecycle) Run(ctx context.Context) error {
	failed := make(chan struct{})
	var failOnce sync.Once
	var started []*running
	stop := func() error {
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			r := started[i]
			l.debug("stopping", r.name)
			if r.stopping != nil {
				r.stopping()
			}
			r.cancel()
			r.wg.Wait()
			if r.stopped != nil {
				r.stopped()
			}
			errs = append(errs, r.errs...)
		}
		return errors.Join(errs...)
	}
	for _, s := range l.stages {
		// A stage's context ends when it is stopped, not when ctx ends:
		// the stages after it stop first.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{stage: s, cancel: cancel}
		if s.start != nil {
			if err := s.start(sctx); err != nil {
				cancel()
				return errors.Join(err, stop())
			}
		}
		started = append(started, r)
		l.debug("starting", s.name)
		for _, p := range s.parts {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				if err := p.Run(sctx); err != nil && !errors.Is(err, context.Canceled) {
					r.mu.Lock()
					r.errs = append(r.errs, err)
					r.mu.Unlock()
					failOnce.Do(func() { close(failed) })
				}
			}()
		}
	}
	select {
	case <-ctx.Done():
	case <-failed:
	}
	return stop()
}
