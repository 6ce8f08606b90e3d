package node

import (
	"context"
	"slices"
	"strings"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

var _ api.ReservationBackend = (*Node)(nil)

// Reservations implements api.ReservationBackend.
func (n *Node) Reservations(ctx context.Context) (api.Reservations, error) {
	if err := n.needPayments(); err != nil {
		return api.Reservations{}, err
	}
	out := api.Reservations{Seller: n.payments.Reservations(), Buyer: []payment.ReservationView{}}
	if n.payer != nil {
		out.Buyer = n.payer.Reservations()
	}
	for _, l := range [][]payment.ReservationView{out.Seller, out.Buyer} {
		slices.SortFunc(l, func(a, b payment.ReservationView) int {
			return strings.Compare(a.Channel+a.Contract, b.Channel+b.Contract)
		})
	}
	return out, nil
}
