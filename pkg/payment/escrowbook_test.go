package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// trio is a buyer, a seller and an arbiter EscrowManager on one chain, each
// with its own store (a restart is a new manager on the same store).
type trio struct {
	cfg                     Config
	chain                   Chain
	funder                  Funder
	stores                  [3]*MemEscrowStore
	buyer, seller, arbiter  *EscrowManager
	id                      string
	sellerPayout, buyerBack []byte
}

func newEscrowManager(tb testing.TB, cfg Config, chain Chain, st EscrowStore, sd []byte, f Funder) *EscrowManager {
	tb.Helper()
	keys, err := NewKeyring(sd, &chaincfg.RegressionNetParams)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := NewEscrowManager(EscrowManagerConfig{Config: cfg, Chain: chain, Store: st, Keys: keys, Funder: f, Log: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func newTrio(tb testing.TB, cfg Config, chain Chain, f Funder) *trio {
	tb.Helper()
	p := &trio{cfg: cfg, chain: chain, funder: f}
	for i := range p.stores {
		p.stores[i] = NewMemEscrowStore()
	}
	p.restart(tb, 0, 1, 2)
	return p
}

// restart replaces the managers named (0 buyer, 1 seller, 2 arbiter) by new
// ones loaded from their stores.
func (p *trio) restart(tb testing.TB, who ...int) {
	tb.Helper()
	for _, i := range who {
		var f Funder
		if i == 0 {
			f = p.funder
		}
		m := newEscrowManager(tb, p.cfg, p.chain, p.stores[i], seed(byte(10+i)), f)
		*[]**EscrowManager{&p.buyer, &p.seller, &p.arbiter}[i] = m
	}
}

func (p *trio) all() []*EscrowManager { return []*EscrowManager{p.buyer, p.seller, p.arbiter} }

// open funds an escrow of amount and has the seller and arbiter accept it.
func (p *trio) open(tb testing.TB, amount int64, delay int32) {
	tb.Helper()
	ctx := context.Background()
	st, err := p.seller.Terms(RoleSeller)
	if err != nil {
		tb.Fatal(err)
	}
	at, err := p.arbiter.Terms(RoleArbiter)
	if err != nil {
		tb.Fatal(err)
	}
	rec, offer, err := p.buyer.OpenEscrow(ctx, EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: amount, Delay: delay, FeeRate: 2})
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range []*EscrowManager{p.seller, p.arbiter} {
		got, err := m.AcceptEscrow(ctx, "b", offer.Encode())
		if err != nil {
			tb.Fatal(err)
		}
		if got.ID != rec.ID || got.State != EscrowPending || got.Amount != amount {
			tb.Fatalf("%s accepted %s %s %d", got.Role, got.ID, got.State, got.Amount)
		}
	}
	p.id, p.sellerPayout, p.buyerBack = rec.ID, rec.SellerScript, rec.BuyerScript
}

func (p *trio) tick(tb testing.TB) {
	tb.Helper()
	for _, m := range p.all() {
		if err := m.Tick(context.Background()); err != nil {
			tb.Fatalf("escrow tick: %v", err)
		}
	}
}

func (p *trio) want(tb testing.TB, s EscrowState, ms ...*EscrowManager) {
	tb.Helper()
	if len(ms) == 0 {
		ms = p.all()
	}
	for _, m := range ms {
		e, err := m.Escrow(p.id)
		if err != nil {
			tb.Fatal(err)
		}
		if e.State != s {
			tb.Fatalf("%s: escrow is %s, want %s", e.Role, e.State, s)
		}
	}
}

func memTrio(t testing.TB) (*trio, *paytest.Chain) {
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.Confirmations = 2
	chain := paytest.NewChain()
	p := newTrio(t, cfg, chain, paytest.NewFunder(chain))
	p.open(t, 5_000_000, 30)
	return p, chain
}

func TestEscrowStateMap(t *testing.T) {
	legal := map[[2]EscrowState]bool{}
	for from, tos := range escrowMoves {
		for _, to := range tos {
			legal[[2]EscrowState{from, to}] = true
		}
	}
	for from := EscrowPending; from <= EscrowFailed; from++ {
		if from.String() == "" || bytes.Contains([]byte(from.String()), []byte("(")) {
			t.Fatalf("state %d has no name", from)
		}
		for to := EscrowPending; to <= EscrowFailed; to++ {
			want := from == to || legal[[2]EscrowState{from, to}]
			if from.CanMove(to) != want {
				t.Fatalf("%s → %s: CanMove %v", from, to, !want)
			}
		}
		if from.Final() && len(escrowMoves[from]) != 0 {
			t.Fatalf("final state %s has moves", from)
		}
	}
	// The stored numbers: appending is fine, renumbering is not.
	for s, n := range map[EscrowState]uint8{EscrowPending: 1, EscrowFunded: 2, EscrowReleasing: 3, EscrowReleased: 4,
		EscrowRefunding: 5, EscrowRefunded: 6, EscrowDisputed: 7, EscrowArbitrated: 8, EscrowFailed: 9} {
		if uint8(s) != n {
			t.Fatalf("%s renumbered", s)
		}
	}
	if EscrowState(42).String() != "escrow_state(42)" {
		t.Fatal(EscrowState(42).String())
	}
	for _, c := range []struct{ from, to EscrowState }{
		{EscrowPending, EscrowReleasing}, {EscrowReleased, EscrowFunded}, {EscrowFailed, EscrowFunded},
		{EscrowFunded, EscrowArbitrated}, {EscrowRefunded, EscrowRefunding},
	} {
		e := &EscrowRecord{ID: "x", State: c.from}
		if err := e.move(c.to); !errors.Is(err, ErrIllegalMove) || e.State != c.from {
			t.Fatalf("%s → %s: %v, now %s", c.from, c.to, err, e.State)
		}
	}
}

func TestEscrowReleaseStoreFailsRestart(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	if _, _, err := p.seller.Release(ctx, p.id); !errors.Is(err, ErrEscrowState) {
		t.Fatalf("release before funding: %v", err)
	}
	chain.Mine(1)
	p.tick(t)
	p.want(t, EscrowPending)
	chain.Mine(1)
	p.tick(t)
	p.want(t, EscrowFunded)

	if _, _, err := p.arbiter.Release(ctx, p.id); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("arbiter release: %v", err)
	}
	sig, tx, err := p.seller.Release(ctx, p.id)
	if err != nil || tx != nil {
		t.Fatalf("seller release: %v, tx %v", err, tx)
	}
	// The buyer's store fails: nothing is acknowledged, nothing changes.
	p.stores[0].Fail = errors.New("disk full")
	if _, err := p.buyer.AddSignature(ctx, "s", sig.Encode()); err == nil {
		t.Fatal("signature acknowledged without being persisted")
	}
	if e, _ := p.buyer.Escrow(p.id); len(e.Sigs) != 0 || e.State != EscrowFunded {
		t.Fatalf("failed persist changed the escrow: %+v", e)
	}
	p.stores[0].Fail = nil
	if _, err := p.buyer.AddSignature(ctx, "s", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	// Acknowledged means durable: a restart still holds it.
	p.restart(t, 0)
	if e, _ := p.buyer.Escrow(p.id); len(e.Sigs) != 1 || e.Sigs[0].Kind != SpendRelease {
		t.Fatalf("restarted buyer lost the signature: %+v", e.Sigs)
	}
	p.stores[0].Fail = errors.New("disk full")
	if _, _, err := p.buyer.Release(ctx, p.id); err == nil {
		t.Fatal("release broadcast without being persisted")
	}
	if e, _ := p.buyer.Escrow(p.id); e.State != EscrowFunded || e.SpendTxid != "" {
		t.Fatalf("failed persist changed the escrow: %s", e.State)
	}
	if n, _ := chain.Confirmations(ctx, mustTx(t, sig, p).TxHash()); n >= 0 {
		t.Fatal("spend broadcast although its persist failed")
	}
	p.stores[0].Fail = nil
	_, tx, err = p.buyer.Release(ctx, p.id)
	if err != nil || tx == nil {
		t.Fatalf("buyer completes release: %v", err)
	}
	if tx.TxOut[0].Value != 5_000_000-sig.Fee || !bytes.Equal(tx.TxOut[0].PkScript, p.sellerPayout) {
		t.Fatalf("release pays %d to %x", tx.TxOut[0].Value, tx.TxOut[0].PkScript)
	}
	p.want(t, EscrowReleasing, p.buyer)
	p.restart(t, 0, 1, 2)
	p.tick(t) // the seller and arbiter see the spend in the mempool
	p.want(t, EscrowReleasing)
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowReleased)
	if _, _, err := p.buyer.Refund(ctx, p.id); !errors.Is(err, ErrEscrowState) {
		t.Fatalf("refund after release: %v", err)
	}
}

// mustTx rebuilds the spend a signature is for.
func mustTx(t *testing.T, s *EscrowSig, p *trio) *wire.MsgTx {
	e, _ := p.buyer.Escrow(p.id)
	tx, err := e.BuildSpend(s.Kind, s.Fee)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestEscrowBadSignaturesRefused(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	chain.Mine(2)
	p.tick(t)
	good, _, err := p.seller.Release(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	arb, _, err := p.arbiter.Arbitrate(ctx, p.id, true)
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := p.buyer.Refund(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := p.buyer.Escrow(p.id)
	mod := func(f func(*EscrowSig)) []byte {
		c := *good
		c.Key, c.Sig = bytes.Clone(good.Key), bytes.Clone(good.Sig)
		f(&c)
		return c.Encode()
	}
	for name, c := range map[string]struct {
		msg  []byte
		want error
	}{
		"malformed":                 {good.Encode()[:40], ErrMalformed},
		"other escrow":              {mod(func(s *EscrowSig) { s.EscrowID.Index++ }), ErrUnknownEscrow},
		"other fee":                 {mod(func(s *EscrowSig) { s.Fee++ }), ErrBadSignature},
		"other kind":                {mod(func(s *EscrowSig) { s.Kind = SpendRefund }), ErrBadSignature},
		"flipped byte":              {mod(func(s *EscrowSig) { s.Sig[10] ^= 1 }), ErrBadSignature},
		"arbiter on coop":           {mod(func(s *EscrowSig) { s.Kind, s.Key = SpendRelease, arb.Key }), ErrWrongKey},
		"stranger":                  {mod(func(s *EscrowSig) { s.Key = mustKey(t).PubKey().SerializeCompressed() }), ErrWrongKey},
		"our own key":               {own.Encode(), ErrWrongKey},
		"fee above max_fee":         {mod(func(s *EscrowSig) { s.Fee = p.cfg.MaxFee + 1 }), ErrFeeBound},
		"sighash not ALL":           {mod(func(s *EscrowSig) { s.Sig[len(s.Sig)-1] = 3 }), ErrBadSignature},
		"high S":                    {mod(func(s *EscrowSig) { s.Sig = withHighS(t, s.Sig) }), ErrBadSignature},
		"payout to the other party": {mod(func(s *EscrowSig) { *s = *arb; s.Kind = SpendPayoutBuyer }), ErrBadSignature},
	} {
		if _, err := p.buyer.AddSignature(ctx, "s", c.msg); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		after, _ := p.buyer.Escrow(p.id)
		if after.State != before.State || len(after.Sigs) != len(before.Sigs) {
			t.Fatalf("%s: refused signature changed the escrow", name)
		}
	}
	// The good one twice: acknowledged twice, held once.
	for range 2 {
		if _, err := p.buyer.AddSignature(ctx, "s", good.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if e, _ := p.buyer.Escrow(p.id); len(e.Sigs) != 2 {
		t.Fatalf("holds %d signatures", len(e.Sigs))
	}
}

func TestEscrowDisputeArbitratedPayout(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	chain.Mine(2)
	p.tick(t)
	if _, _, err := p.buyer.Arbitrate(ctx, p.id, false); err != nil {
		t.Fatal(err) // signing ahead: moves the buyer's escrow to Disputed
	}
	if _, err := p.seller.Dispute(ctx, p.id, "results never delivered"); err != nil {
		t.Fatal(err)
	}
	sig, _, err := p.arbiter.Arbitrate(ctx, p.id, false)
	if err != nil {
		t.Fatal(err)
	}
	p.want(t, EscrowDisputed)
	if _, err := p.buyer.AddSignature(ctx, "a", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.buyer.Arbitrate(ctx, p.id, false); !errors.Is(err, ErrNotExpired) {
		t.Fatalf("arbitrated payout before the delay: %v", err)
	}
	if _, err := p.buyer.Abandon(ctx, p.id, "x"); !errors.Is(err, ErrIllegalMove) {
		t.Fatalf("abandon a disputed escrow: %v", err)
	}
	p.restart(t, 0)
	e, _ := p.buyer.Escrow(p.id)
	chain.Mine(int32(e.Delay) - 1002)
	_, tx, err := p.buyer.Arbitrate(ctx, p.id, false)
	if err != nil || tx == nil || tx.LockTime != e.Delay {
		t.Fatalf("arbitrated payout: %v", err)
	}
	if !bytes.Equal(tx.TxOut[0].PkScript, p.buyerBack) {
		t.Fatal("payout does not pay the buyer")
	}
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowArbitrated)
	if e, _ := p.seller.Escrow(p.id); e.SpendKind != SpendPayoutBuyer || e.SpendTxid != tx.TxHash().String() {
		t.Fatalf("seller classified the spend as %s %s", e.SpendKind, e.SpendTxid)
	}
}

func TestEscrowFundingReorgAndAbandon(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowFunded)
	// A chain whose funding vanished (reorg): back to Pending, and the
	// funding is rebroadcast by Tick.
	p2 := &trio{cfg: p.cfg, chain: paytest.NewChain(), funder: p.funder, stores: p.stores, id: p.id}
	p2.restart(t, 0, 1, 2)
	p2.tick(t)
	p2.want(t, EscrowPending)
	p2.tick(t)
	if n, _ := p2.chain.Confirmations(ctx, p.fundingTxid(t)); n != 0 {
		t.Fatalf("funding not rebroadcast after the reorg: %d", n)
	}
	p2.chain.(*paytest.Chain).Mine(2)
	p2.tick(t)
	p2.want(t, EscrowFunded)

	// Abandon only a pending escrow.
	q, _ := memTrio(t)
	if _, err := q.buyer.Abandon(ctx, q.id, "funding double-spent"); err != nil {
		t.Fatal(err)
	}
	q.want(t, EscrowFailed, q.buyer)
	if _, err := p2.buyer.Abandon(ctx, p2.id, "x"); !errors.Is(err, ErrIllegalMove) {
		t.Fatalf("abandon a funded escrow: %v", err)
	}
}

func (p *trio) fundingTxid(t *testing.T) (h [32]byte) {
	op, err := wire.NewOutPointFromString(p.id)
	if err != nil {
		t.Fatal(err)
	}
	return op.Hash
}

func TestEscrowAcceptRefusesBadOffers(t *testing.T) {
	p, _ := memTrio(t)
	ctx := context.Background()
	st, _ := p.seller.Terms(RoleSeller)
	at, _ := p.arbiter.Terms(RoleArbiter)
	_, offer, err := p.buyer.OpenEscrow(ctx, EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: 1_000_000, Delay: 30, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(o *EscrowOffer)) []byte { c := *offer; f(&c); return c.Encode() }
	for name, c := range map[string]struct {
		msg  []byte
		want error
	}{
		"truncated":    {offer.Encode()[:30], ErrMalformed},
		"not our key":  {mod(func(o *EscrowOffer) { o.SellerIndex++; o.ArbiterIndex++ }), ErrWrongKey},
		"wrong payout": {mod(func(o *EscrowOffer) { o.SellerScript = o.BuyerScript }), ErrWrongScript},
		"wrong output": {mod(func(o *EscrowOffer) { o.Vout = 1 }), ErrBadFunding},
		"no output":    {mod(func(o *EscrowOffer) { o.Vout = 9 }), ErrBadFunding},
		"other delay":  {mod(func(o *EscrowOffer) { o.Delay++ }), ErrBadFunding},
	} {
		if _, err := p.seller.AcceptEscrow(ctx, "b", c.msg); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if n := len(p.seller.Escrows()); n != 1 {
		t.Fatalf("seller holds %d escrows after refusals", n)
	}
}

func FuzzDecodeEscrowSig(f *testing.F) {
	s := &EscrowSig{EscrowID: wire.OutPoint{Index: 2}, Kind: SpendRelease, Fee: 500, Key: make([]byte, 33), Sig: []byte{0x30, 1, 1}}
	f.Add(s.Encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := DecodeEscrowSig(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(s.Encode(), p) {
			t.Fatal("decode/encode not canonical")
		}
	})
}

func FuzzDecodeEscrowOffer(f *testing.F) {
	o := &EscrowOffer{BuyerKey: make([]byte, 33), SellerKey: make([]byte, 33), ArbiterKey: make([]byte, 33),
		SellerIndex: 1, ArbiterIndex: 2, Delay: 100, SellerScript: []byte{0, 20}, BuyerScript: []byte{0, 20},
		FundingTx: []byte{1, 2, 3}, Vout: 1}
	f.Add(o.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		o, err := DecodeEscrowOffer(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(o.Encode(), p) {
			t.Fatal("decode/encode not canonical")
		}
	})
}

// FuzzEscrowAddSignature feeds arbitrary (and mutated valid) signatures to
// a buyer: never a panic, and a refused one changes nothing.
func FuzzEscrowAddSignature(f *testing.F) {
	p, chain := memTrio(f)
	chain.Mine(2)
	p.tick(f)
	good, _, err := p.seller.Release(context.Background(), p.id)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Encode())
	f.Fuzz(func(t *testing.T, msg []byte) {
		before, _ := p.buyer.Escrow(p.id)
		if _, err := p.buyer.AddSignature(context.Background(), "s", msg); err != nil {
			after, _ := p.buyer.Escrow(p.id)
			if after.State != before.State || len(after.Sigs) != len(before.Sigs) {
				t.Fatalf("refused signature changed the escrow: %v", err)
			}
		}
	})
}
