package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// senderBackend is a fakeBackend whose wallet can send.
type senderBackend struct {
	fakeBackend
	got []SendRequest
}

func (b *senderBackend) WalletSend(_ context.Context, req SendRequest) (string, error) {
	b.got = append(b.got, req)
	return "txid1", b.err
}

// TestWalletSend: POST /v1/wallet/send reaches the backend's wallet with
// the request as sent; bad input is refused before it; the funding
// errors keep their category (refused with the message as it is,
// unavailable); a backend without a wallet has no such route.
func TestWalletSend(t *testing.T) {
	b := &senderBackend{}
	c, _ := serve(t, b)
	ctx := context.Background()
	txid, err := c.WalletSend(ctx, SendRequest{Address: "bcrt1qx", AmountSat: 5000, FeeRate: 3})
	if err != nil || txid != "txid1" || len(b.got) != 1 || b.got[0] != (SendRequest{Address: "bcrt1qx", AmountSat: 5000, FeeRate: 3}) {
		t.Fatalf("send: %q %v, backend got %+v", txid, err, b.got)
	}
	for _, bad := range []SendRequest{{AmountSat: 5000}, {Address: "bcrt1qx"}, {Address: "bcrt1qx", AmountSat: -1}, {Address: "bcrt1qx", AmountSat: 1, FeeRate: -2}} {
		if _, err := c.WalletSend(ctx, bad); !errors.Is(err, ErrBadRequest) {
			t.Errorf("send %+v: %v, want bad request", bad, err)
		}
	}
	if len(b.got) != 1 {
		t.Fatalf("bad requests reached the wallet: %+v", b.got)
	}
	b.err = fmt.Errorf("%w: insufficient funds: need about 100282 sat, the wallet has 0 sat spendable", ErrRefused)
	if _, err := c.WalletSend(ctx, SendRequest{Address: "a", AmountSat: 1}); !errors.Is(err, ErrRefused) || err.Error() != "insufficient funds: need about 100282 sat, the wallet has 0 sat spendable" {
		t.Errorf("insufficient funds: %v", err)
	}
	b.err = fmt.Errorf("%w: chain source down: btcd is not reachable", ErrUnavailable)
	if _, err := c.WalletSend(ctx, SendRequest{Address: "a", AmountSat: 1}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "chain source down") {
		t.Errorf("chain source down: %v", err)
	}

	plain, _ := serve(t, &fakeBackend{})
	if _, err := plain.WalletSend(ctx, SendRequest{Address: "a", AmountSat: 1}); err == nil || errors.Is(err, ErrBadRequest) {
		t.Errorf("a backend without a wallet: %v", err)
	}
}
