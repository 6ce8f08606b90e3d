package payment

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
)

// shortOfCoins is what btcwallet's coin selection returns when it comes
// short (a txauthor.InputSourceError).
type shortOfCoins struct{}

func (shortOfCoins) Error() string     { return "insufficient funds available to construct transaction" }
func (shortOfCoins) InputSourceError() {}

// TestFundError: btcwallet's failures are sorted into their causes:
// coin selection short (with the amounts), the chain source gone; the
// rest passes as it is.
func TestFundError(t *testing.T) {
	outs := []*wire.TxOut{wire.NewTxOut(100_000, make([]byte, 34))}
	err := fundError(fmt.Errorf("create tx: %w", shortOfCoins{}), outs, 2, 30_000, 45_000)
	var ife *InsufficientFundsError
	if !errors.Is(err, ErrInsufficientFunds) || !errors.As(err, &ife) || ife.Need != 100_000+2*(fundTxSize+31) || ife.Spendable != 30_000 || ife.Unconfirmed != 15_000 {
		t.Fatalf("short of coins: %v (%+v)", err, ife)
	}
	if !strings.Contains(err.Error(), "30000 sat spendable and 15000 sat waiting for a confirmation") {
		t.Errorf("message: %v", err)
	}
	// The balance read after the selection came short has enough (the
	// wallet took in a block meanwhile): the message says so, and never
	// asks for a negative amount.
	err = fundError(shortOfCoins{}, outs, 2, 40_000_000, 40_000_000)
	if !errors.Is(err, ErrInsufficientFunds) || !strings.Contains(err.Error(), "catching up with the chain; try again") || strings.Contains(err.Error(), "send at least") {
		t.Errorf("caught up meanwhile: %v", err)
	}
	for _, down := range []error{errors.New("blockchain RPC is inactive"), rpcclient.ErrClientShutdown, errors.New("disconnected")} {
		if err := fundError(down, outs, 2, 0, 0); !errors.Is(err, ErrChainDown) {
			t.Errorf("%v: %v, want ErrChainDown", down, err)
		}
	}
	other := errors.New("database full")
	if err := fundError(other, outs, 2, 0, 0); err != other {
		t.Errorf("other: %v", err)
	}
	if err := fundError(shortOfCoins{}, outs, 2, -1, -1); !errors.As(err, &ife) || ife.Spendable != 0 || ife.Unconfirmed != 0 {
		t.Errorf("balance unknown: %v", err)
	}
}
