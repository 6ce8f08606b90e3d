package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
)

// ForwardRequest asks the node to forward a local address to a service.
type ForwardRequest struct {
	// Listen is host:port; port 0 picks a free one.
	Listen string `json:"listen"`
}

// ForwardResponse is the address the node listens on.
type ForwardResponse struct {
	Address string `json:"address"`
}

// forwarder is a Backend that forwards local ports to services (the node).
type forwarder interface {
	Forward(ctx context.Context, id, listen string) (string, error)
}

// handleForward serves POST /v1/jobs/{id}/forward.
func handleForward(mux *http.ServeMux, b Backend, log *slog.Logger) {
	mux.HandleFunc("POST /v1/jobs/{id}/forward", func(w http.ResponseWriter, r *http.Request) {
		f, ok := b.(forwarder)
		if !ok {
			reply(w, log, nil, fmt.Errorf("%w: this node does not forward", ErrBadRequest))
			return
		}
		var req ForwardRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		addr, err := f.Forward(r.Context(), r.PathValue("id"), req.Listen)
		reply(w, log, ForwardResponse{Address: addr}, err)
	})
}

// Forward makes the node listen on listen and forward each connection to
// service id; it returns the address it listens on.
func (c *Client) Forward(ctx context.Context, id, listen string) (string, error) {
	var out ForwardResponse
	err := c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/forward", ForwardRequest{Listen: listen}, &out)
	return out.Address, err
}
