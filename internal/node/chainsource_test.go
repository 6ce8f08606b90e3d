package node

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// fakeChain answers Tip with tip, or fails with err.
type fakeChain struct {
	tip int32
	err error
}

func (f *fakeChain) Broadcast(context.Context, *wire.MsgTx) error { return f.err }
func (f *fakeChain) FeeRate(context.Context, int) (int64, bool, error) {
	return 0, false, f.err
}
func (f *fakeChain) Tip(context.Context) (int32, error) { return f.tip, f.err }
func (f *fakeChain) Confirmations(context.Context, chainhash.Hash) (int32, error) {
	return 0, f.err
}
func (f *fakeChain) SpendOf(context.Context, wire.OutPoint, int32) (*wire.MsgTx, error) {
	return nil, f.err
}

// TestLiveWalletBackoff: while the chain source does not answer, the
// wallet is tried again after 1 s, doubling to a minute; everything that
// needs it says why at once (ErrChainDown with the reason); once the chain
// answers and only the wallet fails to open, that is the reason, and the
// backoff goes on; the offer is re-signed when selling becomes possible
// and when it stops.
func TestLiveWalletBackoff(t *testing.T) {
	chain := &fakeChain{err: errors.New("connection refused")}
	now := time.Unix(1_000_000, 0)
	l := newLiveWallet("btcd", chain, nil, slog.New(slog.DiscardHandler))
	l.now = func() time.Time { return now }
	changes := 0
	l.onChange = func() { changes++ }
	l.why = func(context.Context) string { return "btcd is not reachable at 127.0.0.1:1" }
	opens := 0
	l.open = func(context.Context) (*payment.Wallet, error) {
		opens++
		return nil, errors.New("open btcwallet: timeout")
	}
	l.started(nil, "btcd is not reachable at 127.0.0.1:1")
	ctx := context.Background()

	if l.chainUp() || l.status().State != api.ChainConnecting {
		t.Fatalf("started down: %+v", l.status())
	}
	for _, err := range []error{l.canFund(), func() error { _, err := l.Address(ctx); return err }(),
		func() error { _, _, err := l.Balance(1); return err }(), func() error { _, err := l.FundTx(ctx, nil, 2); return err }(),
		func() error { _, err := l.Send(ctx, "bcrt1q", 1000, 2); return err }()} {
		if !errors.Is(err, payment.ErrChainDown) || !strings.Contains(err.Error(), "not reachable") {
			t.Errorf("with the chain source down: %v", err)
		}
	}
	var waits []time.Duration
	for range 8 {
		waits = append(waits, l.step(ctx))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	if !slicesEqual(waits, want) {
		t.Fatalf("backoff %v, want %v", waits, want)
	}
	if st := l.status(); st.Error != "btcd is not reachable at 127.0.0.1:1" || !st.NextRetry.Equal(now.Add(time.Minute)) {
		t.Fatalf("status while down: %+v", st)
	}
	if changes != 0 || opens != 0 {
		t.Fatalf("down all along: %d offer changes, %d opens", changes, opens)
	}

	// The chain answers; the wallet does not open.
	chain.err, chain.tip = nil, 120
	wait := l.step(ctx)
	st := l.status()
	if opens != 1 || wait != time.Minute || st.State != api.ChainSyncing || !strings.Contains(st.Error, "open the wallet: open btcwallet: timeout") {
		t.Fatalf("wallet failing to open: wait %s, %d opens, %+v", wait, opens, st)
	}
	// The chain answers: a seller sells (it needs no wallet), the offer
	// was signed again once; a buyer cannot fund, and hears why.
	if changes != 1 || !l.chainUp() {
		t.Fatalf("%d offer changes (want 1), chain up %v", changes, l.chainUp())
	}
	if err := l.canFund(); !errors.Is(err, payment.ErrNotSynced) || !strings.Contains(err.Error(), "open the wallet") {
		t.Fatalf("canFund: %v", err)
	}
	l.step(ctx)
	if changes != 1 || opens != 2 {
		t.Fatalf("the wallet failing again: %d offer changes, %d opens", changes, opens)
	}
	chain.err = errors.New("connection refused")
	l.step(ctx)
	if changes != 2 || l.chainUp() {
		t.Fatalf("the chain gone again: %d offer changes, chain up %v", changes, l.chainUp())
	}
}

func slicesEqual(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFundingErrorCategories: the user's to fix is refused with its
// message; the chain source's state is unavailable; others pass as they
// are.
func TestFundingErrorCategories(t *testing.T) {
	short := &payment.InsufficientFundsError{Need: 100_300, Spendable: 20_000, Unconfirmed: 5_000}
	for _, tc := range []struct {
		err  error
		want error
		says string
	}{
		{short, api.ErrRefused, "insufficient funds: need about 100300 sat, the wallet has 20000 sat spendable and 5000 sat waiting for a confirmation: send at least 75300 sat"},
		{payment.ErrFeeBound, api.ErrRefused, "fee"},
		{payment.ErrChainDown, api.ErrUnavailable, "chain source down"},
		{payment.ErrNotSynced, api.ErrUnavailable, "wallet not synced"},
	} {
		got := fundingError(tc.err)
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.says) {
			t.Errorf("fundingError(%v) = %v, want %v saying %q", tc.err, got, tc.want, tc.says)
		}
	}
	other := errors.New("disk full")
	if got := fundingError(other); got != other {
		t.Errorf("fundingError(%v) = %v", other, got)
	}
	if !errors.Is(short, payment.ErrInsufficientFunds) {
		t.Error("an InsufficientFundsError is not an ErrInsufficientFunds")
	}
	if nextTry(300*time.Millisecond) != "trying again now" || nextTry(4*time.Second) != "next try in 4s" {
		t.Errorf("nextTry: %q %q", nextTry(300*time.Millisecond), nextTry(4*time.Second))
	}
}
