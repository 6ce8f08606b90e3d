package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The rest of api.Backend: jobs, contracts, channels and the wallet.

var _ api.Backend = (*Node)(nil)

func (n *Node) needBuyer() error {
	if n.buyer == nil {
		return fmt.Errorf("%w: this node cannot buy: %s", api.ErrUnavailable, n.noBuy)
	}
	return nil
}

func (n *Node) needPayments() error {
	if n.payments == nil {
		return fmt.Errorf("%w: payments are off: %s", api.ErrUnavailable, n.noBuy)
	}
	return nil
}

// notFound maps the contract package's not-found to the API's.
func notFound(err error) error {
	if errors.Is(err, contract.ErrNotFound) {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return err
}

// Submit implements api.Backend.
func (n *Node) Submit(ctx context.Context, req contract.Request) (string, error) {
	if err := n.needBuyer(); err != nil {
		return "", err
	}
	if err := n.checkEscrowRequest(ctx, req); err != nil {
		return "", err
	}
	// The job outlives the API request that started it.
	return n.buyer.Submit(context.WithoutCancel(ctx), req)
}

// Jobs implements api.Backend.
func (n *Node) Jobs(ctx context.Context) ([]*contract.JobStatus, error) {
	if err := n.needBuyer(); err != nil {
		return nil, err
	}
	return n.buyer.Jobs()
}

// Job implements api.Backend.
func (n *Node) Job(ctx context.Context, id string) (*contract.JobStatus, error) {
	if err := n.needBuyer(); err != nil {
		return nil, err
	}
	j, err := n.buyer.Job(id)
	return j, notFound(err)
}

// WaitJob returns job id once it changed after since, or ended, or ctx is
// done (api: GET /v1/jobs/{id}?wait=...).
func (n *Node) WaitJob(ctx context.Context, id string, since time.Time) (*contract.JobStatus, error) {
	if err := n.needBuyer(); err != nil {
		return nil, err
	}
	j, err := n.buyer.WaitChange(ctx, id, since)
	return j, notFound(err)
}

// Cancel implements api.Backend.
func (n *Node) Cancel(ctx context.Context, id string) error {
	if err := n.needBuyer(); err != nil {
		return err
	}
	return notFound(n.buyer.Cancel(id))
}

// Forward listens on listen and forwards each connection to service id
// (the API's forward).
func (n *Node) Forward(ctx context.Context, id, listen string) (string, error) {
	if err := n.needBuyer(); err != nil {
		return "", err
	}
	addr, err := n.buyer.Forward(id, listen)
	return addr, notFound(err)
}

// Contracts implements api.Backend.
func (n *Node) Contracts(ctx context.Context) (api.Contracts, error) {
	out := api.Contracts{EarnedSats: map[string]int64{}, Rejections: map[string]uint64{}}
	if n.seller == nil {
		out.Contracts = []*contract.Record{}
		return out, nil
	}
	recs, err := n.seller.Machine().List(contract.RoleSeller)
	if err != nil {
		return out, err
	}
	out.Contracts = recs
	earned, err := n.seller.Earnings()
	if err != nil {
		return out, err
	}
	for st, v := range earned {
		out.EarnedSats[st.String()] = v
	}
	for r, c := range n.seller.Rejections() {
		out.Rejections[string(r)] = c
	}
	return out, nil
}

// Channels implements api.Backend.
func (n *Node) Channels(ctx context.Context) ([]*payment.Channel, error) {
	if err := n.needPayments(); err != nil {
		return nil, err
	}
	return n.payments.Channels(), nil
}

// CloseChannel implements api.Backend.
func (n *Node) CloseChannel(ctx context.Context, id string) (string, error) {
	if err := n.needPayments(); err != nil {
		return "", err
	}
	c, err := n.payments.Channel(id)
	if err != nil {
		return "", fmt.Errorf("%w: channel %s", api.ErrNotFound, id)
	}
	// A seller settles with the latest payment; a buyer can only take its
	// money back once the channel has expired.
	close := n.payments.Close
	if c.Role == payment.RoleBuyer {
		close = n.payments.Refund
	}
	tx, err := close(ctx, id)
	if err != nil {
		return "", err
	}
	return tx.TxHash().String(), nil
}

// WalletAddress implements api.Backend.
func (n *Node) WalletAddress(ctx context.Context) (string, error) {
	if err := n.needPayments(); err != nil {
		return "", err
	}
	a, err := n.wallet.Address(ctx)
	if err != nil {
		return "", fundingError(err)
	}
	return a.EncodeAddress(), nil
}

// WalletBalance implements api.Backend.
func (n *Node) WalletBalance(ctx context.Context, minConf int32) (api.Balance, error) {
	if err := n.needPayments(); err != nil {
		return api.Balance{}, err
	}
	s, t, err := n.wallet.Balance(minConf)
	return api.Balance{Spendable: int64(s), Total: int64(t)}, fundingError(err)
}
