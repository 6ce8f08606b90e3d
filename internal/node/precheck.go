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

// precheckWait bounds the market search Submit makes before a job starts.
const precheckWait = 15 * time.Second

// FundsError says the wallet cannot pay for a job: it holds Spendable
// sats (Total with unconfirmed coins) and the job needs about Need: a
// channel of Channel sats plus a funding fee of Fee, for a job of JobSat.
type FundsError struct {
	Spendable int64  `json:"spendable_sat"`
	Total     int64  `json:"total_sat"`
	Need      int64  `json:"need_sat"`
	Channel   int64  `json:"channel_sat"`
	Fee       int64  `json:"fee_sat"`
	JobSat    int64  `json:"job_sat"`
	Address   string `json:"address"`
}

func (e *FundsError) Error() string {
	if e.Total >= e.Need {
		return fmt.Sprintf("insufficient funds: the wallet has %d sat spendable and %d sat waiting for a confirmation; this job needs about %d sat (a channel of %d + fee %d, for a job of %d sat): wait for a confirmation (`blackbox wallet balance`) and submit again",
			e.Spendable, e.Total-e.Spendable, e.Need, e.Channel, e.Fee, e.JobSat)
	}
	return fmt.Sprintf("insufficient funds: the wallet has %d sat spendable; this job needs about %d sat (a channel of %d + fee %d, for a job of %d sat): send at least %d sat to %s and wait for a confirmation",
		e.Spendable, e.Need, e.Channel, e.Fee, e.JobSat, e.Need-e.Total, e.Address)
}

// Is makes a FundsError an api.ErrRefused (the user's to fix) and a
// payment.ErrInsufficientFunds.
func (e *FundsError) Is(target error) bool {
	return target == api.ErrRefused || target == payment.ErrInsufficientFunds
}

// precheck is what Submit checks before a job starts, so that a buyer's
// mistake is said within seconds and before any negotiation: that some
// offer on the market fits req (else what would: contract.NoOfferError),
// and that the wallet can pay the cheapest that does — a channel to one of
// those sellers with room, or the coins to fund one (else *FundsError).
// Nothing found on the market in time is no error: the job's own search
// goes on.
func (n *Node) precheck(ctx context.Context, req contract.Request) error {
	// Without its chain source a buyer pays only through an open channel:
	// with none, that is the reason (a seller whose chain source is down
	// too has withdrawn its offer, which would hide it).
	if err := n.fundingBlocked(); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, precheckWait)
	defer cancel()
	// The first offers that fit and that the wallet can pay end the check
	// (the cheapest fitting offer costs no more); a refusal waits for the
	// whole market.
	cands, payable, err := n.buyer.QuoteUntil(qctx, req, func(cands []contract.Candidate) bool {
		return n.payable(ctx, req, cands) == nil
	})
	if errors.Is(err, contract.ErrNoOffer) {
		return fmt.Errorf("%w: %w", api.ErrRefused, err)
	}
	if err != nil || payable {
		return err
	}
	return n.payable(ctx, req, cands)
}

// payable is precheck's look at the wallet for a job whose fitting offers
// are cands, cheapest first: nil when it can pay the cheapest (a channel to
// one of those sellers with room, or the coins to fund one), else why not.
// No candidates, or no payments, is nil.
func (n *Node) payable(ctx context.Context, req contract.Request, cands []contract.Candidate) error {
	if len(cands) == 0 || n.payments == nil || n.wallet == nil {
		return nil
	}
	if req.Escrow != "" {
		return n.precheckEscrow(ctx, req, cands[0].Terms.Total)
	}
	chans := n.payments.Channels()
	for _, c := range cands {
		if payment.FindRoom(chans, c.Seller.String(), c.Terms.Total, "") != nil {
			return nil
		}
	}
	// A new channel needs the chain source and a wallet at its tip.
	if err := n.wallet.canFund(); err != nil {
		return fundingError(err)
	}
	job := cands[0].Terms.Total // cheapest first
	e := &FundsError{Channel: n.buyerChannels().Capacity(job), Fee: n.payments.FundingFee(ctx), JobSat: job}
	e.Need = e.Channel + e.Fee
	spendable, total, err := n.wallet.Balance(1)
	if err != nil {
		return fmt.Errorf("check the wallet: %w", err)
	}
	e.Spendable, e.Total = int64(spendable), int64(total)
	if e.Spendable >= e.Need {
		return nil
	}
	if e.Total >= e.Need {
		// Coins on their way. A channel being funded (by a job submitted
		// just before) has made change that confirms in a moment. The
		// channels are read again: the one whose funding spent the coins
		// the balance misses may have been recorded since (its record is
		// written before its funding is published).
		for _, c := range n.payments.Channels() {
			if c.Role == payment.RoleBuyer && c.State == payment.StatePending ||
				payment.FindRoom([]*payment.Channel{c}, cands[0].Seller.String(), job, "") != nil {
				return nil
			}
		}
	}
	addr, err := n.wallet.Address(ctx)
	if err != nil {
		return fmt.Errorf("wallet address: %w", err)
	}
	e.Address = addr.EncodeAddress()
	return e
}
