//go:build integration

package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// pair is a buyer and a seller Manager on one regtest node.
type pair struct {
	h              *btcdtest.Harness
	chain          Chain
	backend        string
	light          *NeutrinoChain // backend neutrino
	buyer, seller  *Manager
	bstore, sstore *MemStore
	payout         []byte
	cfg            Config
}

func testConfig(h *btcdtest.Harness, payout string) Config {
	cfg := RegtestConfig()
	cfg.RPCHost, cfg.RPCUser, cfg.RPCPass, cfg.RPCNoTLS = h.RPCHost, h.RPCUser, h.RPCPass, true
	cfg.PayoutAddress = payout
	cfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
	cfg.Confirmations = 1
	cfg.SafetyMargin = 6
	cfg.ChannelLifetime = 40
	cfg.FallbackFeeRate = 2
	return cfg
}

// newPair is a buyer and a seller on backend (both through one client).
func newPair(t *testing.T, backend string) *pair {
	t.Helper()
	h := btcdtest.Start(t, 5)
	payoutKey := mustKey(t)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payoutKey.PubKey().SerializeCompressed()), btcdtest.Params)
	payout, _ := txscript.PayToAddrScript(addr)
	cfg := testConfig(h, addr.EncodeAddress())
	p := &pair{h: h, backend: backend, bstore: NewMemStore(), sstore: NewMemStore(), payout: payout, cfg: cfg}
	switch backend {
	case BackendBtcd:
		chain, err := DialBtcd(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(chain.Close)
		p.chain = chain
	case BackendNeutrino:
		p.light = startLight(t, h)
		p.chain = p.light
		p.cfg.Backend, p.cfg.Peers = BackendNeutrino, []string{h.P2PHost}
	}
	p.buyer = newManager(t, p.cfg, p.chain, p.bstore, seed(1), h)
	p.seller = newManager(t, p.cfg, p.chain, p.sstore, seed(2), nil)
	return p
}

// open funds a channel from buyer to seller and mines until both see it open.
func (p *pair) open(t *testing.T, capacity int64) (string, *wire.MsgTx) {
	t.Helper()
	ctx := context.Background()
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	c, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "seller", Seller: terms, Capacity: capacity, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := p.seller.AcceptOpen(ctx, "buyer", req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if sc.ID != c.ID || sc.State != StatePending {
		t.Fatalf("seller sees %s %s", sc.ID, sc.State)
	}
	p.mine(t, 1)
	p.wantState(t, c.ID, StateOpen)
	var ftx wire.MsgTx
	_ = ftx.Deserialize(bytes.NewReader(c.FundingTx))
	return c.ID, &ftx
}

func (p *pair) mine(t *testing.T, n uint32) {
	t.Helper()
	p.gen(t, n)
	ctx := context.Background()
	for _, m := range []*Manager{p.buyer, p.seller} {
		if err := m.Tick(ctx); err != nil {
			t.Fatalf("tick: %v", err)
		}
	}
}

// gen mines n blocks and waits until the pair's chain client has them.
func (p *pair) gen(t *testing.T, n uint32) {
	t.Helper()
	p.h.MustGenerate(t, n)
	if p.light != nil {
		waitLight(t, p.light, p.h)
	}
}

func (p *pair) wantState(t *testing.T, id string, s State) {
	t.Helper()
	for _, m := range []*Manager{p.buyer, p.seller} {
		c, err := m.Channel(id)
		if err != nil {
			t.Fatal(err)
		}
		if c.State != s {
			t.Fatalf("%s: channel %s is %s, want %s", c.Role, id, c.State, s)
		}
	}
}

func (p *pair) pay(t *testing.T, id, contract string, amt int64) {
	t.Helper()
	u, err := p.buyer.Pay(context.Background(), id, contract, amt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(context.Background(), "buyer", u.Encode()); err != nil {
		t.Fatal(err)
	}
}

func TestRegtestOpenPayClose(t *testing.T) { onBackends(t, testRegtestOpenPayClose) }

func testRegtestOpenPayClose(t *testing.T, backend string) {
	p := newPair(t, backend)
	const capacity = 1_000_000
	id, _ := p.open(t, capacity)
	var sum int64
	for i := 1; i <= 100; i++ {
		amt := int64(1000 + i)
		contract := []string{"c1", "c2", "c3"}[i%3]
		p.pay(t, id, contract, amt)
		sum += amt
	}
	sc, _ := p.seller.Channel(id)
	if sc.Paid != sum || sc.Seq != 100 {
		t.Fatalf("seller holds paid %d seq %d, want %d 100", sc.Paid, sc.Seq, sum)
	}
	tx, err := p.seller.Close(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	p.mine(t, 1)
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitConfirmations(wctx, p.chain, tx.TxHash(), 1, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	p.wantState(t, id, StateClosed)
	got, _ := p.h.Balance(p.payout, tx)
	if want := sum - sc.CloseFee; got != want {
		t.Fatalf("payout got %d, want %d (sum %d - fee %d)", got, want, sum, sc.CloseFee)
	}
	back, _ := p.h.Balance(sc.BuyerScript, tx)
	if back != capacity-sum {
		t.Fatalf("buyer change %d, want %d", back, capacity-sum)
	}
	t.Logf("100 updates, payout %d sat = %d paid - %d close fee; close tx %d vB", got, sum, sc.CloseFee, VSize(tx))
}

func TestRegtestSellerVanishesBuyerRefunds(t *testing.T) {
	onBackends(t, testRegtestSellerVanishesBuyerRefunds)
}

func testRegtestSellerVanishesBuyerRefunds(t *testing.T, backend string) {
	p := newPair(t, backend)
	const capacity = 500_000
	id, _ := p.open(t, capacity)
	p.pay(t, id, "c1", 10_000) // paid, but the seller never closes
	bc, _ := p.buyer.Channel(id)
	ctx := context.Background()
	if _, err := p.buyer.Refund(ctx, id); !errors.Is(err, ErrNotExpired) {
		t.Fatalf("early refund: %v, want ErrNotExpired", err)
	}
	tip := p.h.Tip(t)
	p.gen(t, uint32(int32(bc.Expiry)-tip))
	// The buyer's Tick refunds by itself at expiry; the seller is gone.
	if err := p.buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	bc, _ = p.buyer.Channel(id)
	if bc.State != StateClosing || len(bc.SpendTx) == 0 {
		t.Fatalf("buyer channel %s after expiry, want closing with a refund", bc.State)
	}
	var refund wire.MsgTx
	_ = refund.Deserialize(bytes.NewReader(bc.SpendTx))
	p.gen(t, 1)
	_ = p.buyer.Tick(ctx)
	bc, _ = p.buyer.Channel(id)
	if bc.State != StateClosed {
		t.Fatalf("buyer channel %s, want closed", bc.State)
	}
	got, _ := p.h.Balance(bc.BuyerScript, &refund)
	fee := capacity - refund.TxOut[0].Value
	if got != capacity-fee || fee > 2*(VSize(&refund)+1) {
		t.Fatalf("refund %d, fee %d for %d vB", got, fee, VSize(&refund))
	}
	t.Logf("refund returned %d of %d (fee %d sat, %d vB)", got, capacity, fee, VSize(&refund))
}

func TestRegtestBuyerVanishesSellerCloses(t *testing.T) {
	onBackends(t, testRegtestBuyerVanishesSellerCloses)
}

func testRegtestBuyerVanishesSellerCloses(t *testing.T, backend string) {
	p := newPair(t, backend)
	id, _ := p.open(t, 300_000)
	for i := 0; i < 5; i++ {
		p.pay(t, id, "c1", 20_000)
	}
	// The buyer disappears; the seller's Tick closes alone before expiry
	// minus the safety margin.
	sc, _ := p.seller.Channel(id)
	ctx := context.Background()
	tip := p.h.Tip(t)
	p.gen(t, uint32(int32(sc.Expiry)-p.cfg.SafetyMargin-tip))
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	sc, _ = p.seller.Channel(id)
	if sc.State != StateClosing {
		t.Fatalf("seller channel %s at expiry-margin, want closing", sc.State)
	}
	var close wire.MsgTx
	_ = close.Deserialize(bytes.NewReader(sc.SpendTx))
	// A late update is refused: the seller no longer takes payments it
	// could not settle in time.
	p.gen(t, 1)
	_ = p.seller.Tick(ctx)
	sc, _ = p.seller.Channel(id)
	if sc.State != StateClosed {
		t.Fatalf("seller channel %s, want closed", sc.State)
	}
	if got, _ := p.h.Balance(p.payout, &close); got != 100_000-sc.CloseFee {
		t.Fatalf("payout %d, want %d", got, 100_000-sc.CloseFee)
	}
}

func TestRegtestFundingReorg(t *testing.T) { onBackends(t, testRegtestFundingReorg) }

func testRegtestFundingReorg(t *testing.T, backend string) {
	p := newPair(t, backend)
	id, _ := p.open(t, 400_000)
	p.pay(t, id, "c1", 5_000)
	// Disconnect the block with the funding transaction.
	bc, _ := p.buyer.Channel(id)
	res, err := p.h.Client().GetRawTransactionVerbose(ptr(bc.FundingTxid()))
	if err != nil {
		t.Fatal(err)
	}
	bh, _ := chainHash(res.BlockHash)
	if err := p.h.InvalidateBlock(&bh); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	paid := int64(6000)
	if backend == BackendNeutrino {
		// A light client learns of a reorg only from a longer branch:
		// mine one (the funding goes back in, in another block) and
		// check that the client dropped what it had seen and counts the
		// funding's confirmations in the new block.
		p.gen(t, 2)
		confs, err := TxConfirmations(ctx, p.chain, bc.FundingTxid(), fundingScript(bc), bc.OpenHeight-6)
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.h.Client().GetRawTransactionVerbose(ptr(bc.FundingTxid()))
		if err != nil {
			t.Fatal(err)
		}
		if res.BlockHash == bh.String() || int64(confs) != int64(res.Confirmations) {
			t.Fatalf("after the reorg the light client counts %d confirmations, btcd %d in block %s (invalidated %s)", confs, res.Confirmations, res.BlockHash, bh)
		}
	} else {
		for _, m := range []*Manager{p.buyer, p.seller} {
			if err := m.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		p.wantState(t, id, StatePending)
		// Unconfirmed again: the seller takes a payment only as it does on
		// a funding it accepted unconfirmed, within zero_conf_max
		// (zeroconf.go), and counts the channel in its exposure.
		p.pay(t, id, "c1", 1000)
		if v := p.seller.ZeroConf(); v.ExposureSat != 6000 {
			t.Fatalf("exposure while reorged out %+v, want 6000", v)
		}
		paid += 1000
	}
	// Mine on the new branch: the funding comes back from the mempool (or
	// is rebroadcast by Tick) and the channel reopens with its state.
	for i := 0; i < 3; i++ {
		p.mine(t, 1)
	}
	p.wantState(t, id, StateOpen)
	p.pay(t, id, "c1", 1000)
	sc, _ := p.seller.Channel(id)
	if sc.Paid != paid {
		t.Fatalf("paid %d after reorg, want %d", sc.Paid, paid)
	}
	if _, err := p.seller.Close(ctx, id); err != nil {
		t.Fatal(err)
	}
	p.mine(t, 1)
	p.wantState(t, id, StateClosed)
}

func TestRegtestBadUpdatesRefused(t *testing.T) { onBackends(t, testRegtestBadUpdatesRefused) }

func testRegtestBadUpdatesRefused(t *testing.T, backend string) {
	p := newPair(t, backend)
	id, _ := p.open(t, 200_000)
	id2, _ := p.open(t, 200_000)
	ctx := context.Background()
	p.pay(t, id, "c1", 10_000)
	before, _ := p.seller.Channel(id)
	good, err := p.buyer.Pay(ctx, id, "c1", 1000)
	if err != nil {
		t.Fatal(err)
	}
	other := newManager(t, p.cfg, p.chain, NewMemStore(), seed(9), nil)
	_ = other
	wrongKey := *good
	k := mustKey(t)
	c, _ := p.buyer.Channel(id)
	tx, _ := c.CloseTx(good.Amount)
	ws, _ := c.Script()
	wrongKey.Sig, _ = SignInput(tx, 0, ws, c.Capacity, k)
	otherChan := *good
	op2, _ := wire.NewOutPointFromString(id2)
	otherChan.ChannelID = *op2
	cases := []struct {
		name string
		msg  []byte
		peer string
		want error
	}{
		{"lower amount", mod(good, func(u *Update) { u.Amount = 9_000; u.ContractAmount = 9_000 }), "buyer", ErrLowerAmount},
		{"over capacity", mod(good, func(u *Update) { u.Amount = 300_000; u.ContractAmount = 300_000 }), "buyer", ErrOverCapacity},
		{"wrong script", mod(good, func(u *Update) { u.PayScript = append([]byte{0, 20}, make([]byte, 20)...) }), "buyer", ErrWrongScript},
		{"wrong key", wrongKey.Encode(), "buyer", ErrBadSignature},
		{"signature for another amount", mod(good, func(u *Update) { u.Amount++; u.ContractAmount++ }), "buyer", ErrBadSignature},
		{"other channel", otherChan.Encode(), "buyer", ErrBadSignature},
		{"unknown channel", mod(good, func(u *Update) { u.ChannelID.Index = 7 }), "buyer", ErrUnknownChannel},
		{"other peer", good.Encode(), "mallory", ErrUnknownChannel},
		{"stale replay", mod(good, func(u *Update) { u.Seq = 1 }), "buyer", ErrStale},
		{"contract totals", mod(good, func(u *Update) { u.ContractAmount = 50 }), "buyer", ErrContractAmount},
		{"malformed", good.Encode()[:40], "buyer", ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.seller.AcceptUpdate(ctx, tc.peer, tc.msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			after, _ := p.seller.Channel(id)
			if after.Paid != before.Paid || after.Seq != before.Seq || !bytes.Equal(after.BuyerSig, before.BuyerSig) {
				t.Fatalf("state changed: %d/%d → %d/%d", before.Paid, before.Seq, after.Paid, after.Seq)
			}
		})
	}
	// A store that fails leaves the state unchanged and acknowledges nothing.
	p.sstore.Fail = errors.New("disk full")
	if _, err := p.seller.AcceptUpdate(ctx, "buyer", good.Encode()); err == nil {
		t.Fatal("accepted an update it could not persist")
	}
	p.sstore.Fail = nil
	if after, _ := p.seller.Channel(id); after.Paid != before.Paid {
		t.Fatalf("paid %d after failed persist, want %d", after.Paid, before.Paid)
	}
	// The good update still goes through, and again (resend) idempotently.
	for i := 0; i < 2; i++ {
		if _, err := p.seller.AcceptUpdate(ctx, "buyer", good.Encode()); err != nil {
			t.Fatal(err)
		}
	}
}

func mod(u *Update, f func(*Update)) []byte {
	c := *u
	f(&c)
	return c.Encode()
}

func TestRegtestFeeBound(t *testing.T) { onBackends(t, testRegtestFeeBound) }

func testRegtestFeeBound(t *testing.T, backend string) {
	p := newPair(t, backend)
	terms, _ := p.seller.SellerTerms()
	ctx := context.Background()
	_, _, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 100_000, FeeRate: p.cfg.MaxFeeRate + 1})
	if !errors.Is(err, ErrFeeBound) {
		t.Fatalf("open above max_fee_rate: %v, want ErrFeeBound", err)
	}
	// A seller with a lower bound refuses a buyer's close fee above it.
	strict := p.cfg
	strict.MaxFeeRate = 3
	strict.FallbackFeeRate = 2
	s2 := newManager(t, strict, p.chain, NewMemStore(), seed(2), nil)
	_, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 100_000, FeeRate: 50})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.AcceptOpen(ctx, "b", req.Encode()); !errors.Is(err, ErrFeeBound) {
		t.Fatalf("accept open with close fee above bound: %v, want ErrFeeBound", err)
	}
}
