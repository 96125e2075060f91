package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Health answers /healthz and /readyz from checks the caller registers.
// /healthz is not ok (503) while a health check fails: a failure that stops
// flows from being stored. /readyz is not ok while any check fails, the
// readiness checks included (a source not connected, ClickHouse not
// answering).
type Health struct {
	mu     sync.Mutex
	health []check
	ready  []check
	info   func() map[string]any
}

type check struct {
	name string
	fn   func(context.Context) error
}

// Check registers a health check (it counts for /readyz too).
func (h *Health) Check(name string, fn func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.health = append(h.health, check{name, fn})
}

// Ready registers a readiness check.
func (h *Health) Ready(name string, fn func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready = append(h.ready, check{name, fn})
}

// Info sets extra fields /healthz reports.
func (h *Health) Info(fn func() map[string]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.info = fn
}

// Livez serves /livez: ok while the process serves HTTP at all. It is the
// liveness probe; /healthz fails during a ClickHouse outage, which a
// restart does not cure.
func (h *Health) Livez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
}

// Healthz serves /healthz.
func (h *Health) Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, false) })
}

// Readyz serves /readyz.
func (h *Health) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, true) })
}

func (h *Health) serve(w http.ResponseWriter, r *http.Request, readiness bool) {
	h.mu.Lock()
	checks := append([]check(nil), h.health...)
	if readiness {
		checks = append(checks, h.ready...)
	}
	info := h.info
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	body := map[string]any{}
	if info != nil && !readiness {
		body = info()
	}
	failures := map[string]string{}
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			failures[c.name] = err.Error()
		}
	}
	status := http.StatusOK
	body["status"] = "ok"
	if len(failures) > 0 {
		status = http.StatusServiceUnavailable
		body["status"] = "failing"
		body["failures"] = failures
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
