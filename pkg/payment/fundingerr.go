package payment

import (
	"errors"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
	"github.com/btcsuite/btcwallet/wallet/txauthor"
)

// Why a funding (a channel's, or `wallet send`'s) failed. Callers branch
// with errors.Is; the messages say what to do. ErrFeeBound (config.go) is
// the fourth: the fee it would take is above payment.max_fee or
// max_fee_rate.
var (
	// ErrChainDown: the wallet's chain source (btcd, or the light
	// client's peers) does not answer, so nothing can be funded or sent.
	ErrChainDown = errors.New("chain source down")
	// ErrNotSynced: the chain source answers but the wallet has not caught
	// up with it yet (after a start or a reconnect), so its coins are not
	// known to be spendable.
	ErrNotSynced = errors.New("wallet not synced")
)

// InsufficientFundsError is ErrInsufficientFunds with the amounts: what the
// transaction needs (outputs plus an estimate of its fee) against what the
// wallet can spend now and what waits for a confirmation.
type InsufficientFundsError struct {
	Need        int64 `json:"need_sat"`
	Spendable   int64 `json:"spendable_sat"`
	Unconfirmed int64 `json:"unconfirmed_sat"`
}

func (e *InsufficientFundsError) Error() string {
	msg := fmt.Sprintf("%v: need about %d sat, the wallet has %d sat spendable", ErrInsufficientFunds, e.Need, e.Spendable)
	if e.Spendable >= e.Need {
		// The balance, read after the coin selection came short, has
		// enough: the wallet took in a block meanwhile.
		return msg + ": the wallet was catching up with the chain; try again"
	}
	if e.Unconfirmed > 0 {
		msg += fmt.Sprintf(" and %d sat waiting for a confirmation", e.Unconfirmed)
		if e.Spendable+e.Unconfirmed >= e.Need {
			return msg + ": wait for it to confirm (`blackbox wallet balance`)"
		}
	}
	return msg + fmt.Sprintf(": send at least %d sat to `blackbox wallet address`", e.Need-e.Spendable-e.Unconfirmed)
}

// Is makes it an ErrInsufficientFunds.
func (e *InsufficientFundsError) Is(target error) bool { return target == ErrInsufficientFunds }

// fundTxSize is about the vsize of a one-input P2WPKH funding with change,
// for the fee part of InsufficientFundsError.Need.
const fundTxSize = 110

// fundError says why btcwallet could not build a transaction paying outs:
// coin selection came short (with the amounts), or the chain source is
// gone; anything else is returned as it is. spendable and total are the
// wallet's balance (1 confirmation), or negative when it could not be
// read.
func fundError(err error, outs []*wire.TxOut, feeRate int64, spendable, total btcutil.Amount) error {
	var short txauthor.InputSourceError
	switch {
	case errors.As(err, &short):
		e := &InsufficientFundsError{Need: fundNeed(outs, feeRate), Spendable: int64(spendable), Unconfirmed: int64(total - spendable)}
		if spendable < 0 {
			e.Spendable, e.Unconfirmed = 0, 0
		}
		return e
	case IsChainDown(err):
		return fmt.Errorf("%w: %v", ErrChainDown, err)
	}
	return err
}

// fundNeed is about what a transaction paying outs takes: the outputs and
// its fee at feeRate.
func fundNeed(outs []*wire.TxOut, feeRate int64) int64 {
	need := feeRate * int64(fundTxSize+31*len(outs))
	for _, o := range outs {
		need += o.Value
	}
	return need
}

// IsChainDown reports whether err says the chain source cannot be reached:
// ErrChainDown, or what btcwallet and rpcclient answer while it is gone.
func IsChainDown(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrChainDown) || errors.Is(err, rpcclient.ErrClientDisconnect) ||
		errors.Is(err, rpcclient.ErrClientShutdown) || errors.Is(err, rpcclient.ErrClientNotConnected) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{
		"blockchain RPC is inactive", // btcwallet without a chain client
		"disconnected",               // btcwallet's chain client stopped
		"connection refused",
		"chain source did not answer",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
