package api

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/blackbox-market/blackbox/internal/health"
)

// HealthBackend is a Backend that can say whether the node can earn (the
// daemon does; test backends need not).
type HealthBackend interface {
	// Health is the node's health report: the same checks /healthz serves.
	Health(ctx context.Context) (health.Report, error)
}

// handleHealth serves GET /v1/health when b can answer it. The report is
// a 200 either way: the question was answered (/healthz is the probe that
// turns a "no" into a 503).
func handleHealth(mux *http.ServeMux, b Backend, log *slog.Logger) {
	hb, ok := b.(HealthBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		rep, err := hb.Health(r.Context())
		reply(w, log, rep, err)
	})
}

// Health asks the daemon whether the node can earn.
func (c *Client) Health(ctx context.Context) (health.Report, error) {
	var r health.Report
	return r, c.do(ctx, http.MethodGet, "/v1/health", nil, &r)
}
