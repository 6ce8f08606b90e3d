package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// EscrowBackend is what a backend serves for escrowed jobs (a Backend
// that is not one answers 404 on these routes).
type EscrowBackend interface {
	// Escrows lists this node's escrows (as buyer, seller or arbiter);
	// Escrow shows one by ID, ID prefix or contract ID.
	Escrows(ctx context.Context) ([]*payment.EscrowRecord, error)
	Escrow(ctx context.Context, id string) (*payment.EscrowRecord, error)
	// Dispute sends this node's case about an escrowed job (a job or
	// contract ID) to its arbiter.
	Dispute(ctx context.Context, job, reason string) (*payment.EscrowRecord, error)
	// Decide is the arbiter's decision: pay "seller" or "buyer".
	Decide(ctx context.Context, id, pay string) (*payment.EscrowRecord, error)
	// Release is the buyer's release of a held escrow.
	Release(ctx context.Context, job string) (*payment.EscrowRecord, error)
}

// DisputeRequest is the body of POST /v1/escrow/dispute.
type DisputeRequest struct {
	Job    string `json:"job"`
	Reason string `json:"reason"`
}

// DecideRequest is the body of POST /v1/escrows/{id}/decide.
type DecideRequest struct {
	Pay string `json:"pay"`
}

func escrowRoutes(mux *http.ServeMux, b Backend, log *slog.Logger) {
	eb, ok := b.(EscrowBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/escrows", func(w http.ResponseWriter, r *http.Request) {
		list, err := eb.Escrows(r.Context())
		if list == nil {
			list = []*payment.EscrowRecord{}
		}
		reply(w, log, list, err)
	})
	mux.HandleFunc("GET /v1/escrows/{id}", func(w http.ResponseWriter, r *http.Request) {
		e, err := eb.Escrow(r.Context(), r.PathValue("id"))
		reply(w, log, e, err)
	})
	mux.HandleFunc("POST /v1/escrows/{id}/decide", func(w http.ResponseWriter, r *http.Request) {
		var req DecideRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		e, err := eb.Decide(r.Context(), r.PathValue("id"), req.Pay)
		reply(w, log, e, err)
	})
	mux.HandleFunc("POST /v1/escrow/dispute", func(w http.ResponseWriter, r *http.Request) {
		var req DisputeRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		e, err := eb.Dispute(r.Context(), req.Job, req.Reason)
		reply(w, log, e, err)
	})
	mux.HandleFunc("POST /v1/escrow/release", func(w http.ResponseWriter, r *http.Request) {
		var req DisputeRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		e, err := eb.Release(r.Context(), req.Job)
		reply(w, log, e, err)
	})
}

// Escrows lists the daemon's escrows.
func (c *Client) Escrows(ctx context.Context) ([]*payment.EscrowRecord, error) {
	var out []*payment.EscrowRecord
	err := c.do(ctx, http.MethodGet, "/v1/escrows", nil, &out)
	return out, err
}

// Escrow shows one escrow.
func (c *Client) Escrow(ctx context.Context, id string) (*payment.EscrowRecord, error) {
	var out payment.EscrowRecord
	err := c.do(ctx, http.MethodGet, "/v1/escrows/"+url.PathEscape(id), nil, &out)
	return &out, err
}

// Dispute sends the node's case about job to the arbiter.
func (c *Client) Dispute(ctx context.Context, job, reason string) (*payment.EscrowRecord, error) {
	var out payment.EscrowRecord
	err := c.do(ctx, http.MethodPost, "/v1/escrow/dispute", DisputeRequest{Job: job, Reason: reason}, &out)
	return &out, err
}

// Decide is the arbiter's decision.
func (c *Client) Decide(ctx context.Context, id, pay string) (*payment.EscrowRecord, error) {
	var out payment.EscrowRecord
	err := c.do(ctx, http.MethodPost, "/v1/escrows/"+url.PathEscape(id)+"/decide", DecideRequest{Pay: pay}, &out)
	return &out, err
}

// Release releases a held escrow of job.
func (c *Client) Release(ctx context.Context, job string) (*payment.EscrowRecord, error) {
	var out payment.EscrowRecord
	err := c.do(ctx, http.MethodPost, "/v1/escrow/release", DisputeRequest{Job: job}, &out)
	return &out, err
}
