package api

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// ReservationBackend is what a backend serves about capacity reservations
// (a Backend that is not one answers 404): each running contract's worst
// case held on its channel, as seller and as buyer.
type ReservationBackend interface {
	Reservations(ctx context.Context) (Reservations, error)
}

// Reservations is the body of GET /v1/reservations.
type Reservations struct {
	// Seller is what the buyers' contracts reserved on our channels as
	// seller; Buyer what our contracts reserved on our channels as buyer.
	Seller []payment.ReservationView `json:"seller"`
	Buyer  []payment.ReservationView `json:"buyer"`
}

func reservationRoutes(mux *http.ServeMux, b Backend, log *slog.Logger) {
	rb, ok := b.(ReservationBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/reservations", func(w http.ResponseWriter, r *http.Request) {
		res, err := rb.Reservations(r.Context())
		reply(w, log, res, err)
	})
}

// Reservations returns the daemon's capacity reservations.
func (c *Client) Reservations(ctx context.Context) (Reservations, error) {
	var r Reservations
	return r, c.do(ctx, http.MethodGet, "/v1/reservations", nil, &r)
}
