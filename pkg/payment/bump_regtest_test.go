//go:build integration

package payment

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// The fee-bumping tests need a close or refund that stays in the mempool
// while blocks are mined. btcd's `generate` mines every mempool
// transaction, and btcd's own block template skips a low-fee parent and so
// its child too (it does not mine packages). These tests therefore mine
// with btcdtest.MinePackages(minerFloor): a block holds only the mempool
// transactions whose package (with unconfirmed ancestors) pays at least
// minerFloor sat/vB, as a fee-minded miner (Bitcoin Core's ancestor-feerate
// selection) does. The channel's close is priced at 2 sat/vB at open and
// stays below the floor until it is bumped.
const minerFloor = 5

// keySigner is an OutputSigner holding one P2WPKH key (the test's payout
// key): the node's wallet does the same for its own addresses.
type keySigner struct {
	key    *btcec.PrivateKey
	script []byte
}

func (k keySigner) SignOutput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	if !bytes.Equal(pkScript, k.script) {
		return nil, ErrNotOurs
	}
	return txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, prevs), idx, amount, pkScript, txscript.SigHashAll, k.key, true)
}

// bumpPair is a buyer and a seller on one regtest node, the seller able to
// sign for its payout script, both reporting failed channels.
type bumpPair struct {
	*pair
	signer keySigner
	mu     sync.Mutex
	failed map[Role][]*Channel
}

func newBumpPair(t *testing.T, tweak func(*Config)) *bumpPair {
	t.Helper()
	h := btcdtest.Start(t, 5)
	payoutKey := mustKey(t)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payoutKey.PubKey().SerializeCompressed()), btcdtest.Params)
	payout, _ := txscript.PayToAddrScript(addr)
	cfg := testConfig(h, addr.EncodeAddress())
	cfg.BumpAfter = 1
	cfg.MaxFeeRate = 50
	if tweak != nil {
		tweak(&cfg)
	}
	chain, err := DialBtcd(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(chain.Close)
	p := &bumpPair{
		pair:   &pair{h: h, chain: chain, bstore: NewMemStore(), sstore: NewMemStore(), payout: payout, cfg: cfg},
		signer: keySigner{key: payoutKey, script: payout},
		failed: map[Role][]*Channel{},
	}
	p.buyer = p.manager(t, RoleBuyer)
	p.seller = p.manager(t, RoleSeller)
	return p
}

// manager (re)builds one side's Manager on its store: a restart.
func (p *bumpPair) manager(t *testing.T, r Role) *Manager {
	t.Helper()
	st, sd, f := p.bstore, seed(1), Funder(p.h)
	var signer OutputSigner
	if r == RoleSeller {
		st, sd, f, signer = p.sstore, seed(2), nil, p.signer
	}
	keys, err := NewKeyring(sd, btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{Config: p.cfg, Chain: p.chain, Store: st, Keys: keys, Funder: f, Log: testLogger(t),
		Signer: signer, OnFail: func(c *Channel) {
			p.mu.Lock()
			p.failed[c.Role] = append(p.failed[c.Role], c)
			p.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// minePackages mines one block at the miner floor and ticks both sides.
func (p *bumpPair) minePackages(t *testing.T) []chainhash.Hash {
	t.Helper()
	_, mined, err := p.h.MinePackages(minerFloor)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, m := range []*Manager{p.buyer, p.seller} {
		if err := m.Tick(ctx); err != nil {
			t.Logf("tick: %v", err)
		}
	}
	return mined
}

func (p *bumpPair) confs(t *testing.T, txid chainhash.Hash) int32 {
	t.Helper()
	n, err := p.chain.Confirmations(context.Background(), txid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// openPending has the buyer fund a channel at 2 sat/vB and the seller
// accept it; nothing is mined.
func (p *bumpPair) openPending(t *testing.T) *Channel {
	t.Helper()
	ctx := context.Background()
	terms, _ := p.seller.SellerTerms()
	c, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "seller", Seller: terms, Capacity: 200_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptOpen(ctx, "buyer", req.Encode()); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRegtestCloseBumpedByChild: the seller's close, priced at 2 sat/vB
// when the channel opened, is not mined at a 5 sat/vB floor; the seller's
// Tick pays for it with a child spending its payout output, bumped again
// (by a bigger child replacing the first) across a restart, until the
// pair is mined — well before the channel's expiry, never above
// max_fee_rate.
func TestRegtestCloseBumpedByChild(t *testing.T) {
	p := newBumpPair(t, nil)
	ctx := context.Background()
	id, _ := p.open(t, 300_000)
	for i := 0; i < 5; i++ {
		p.pay(t, id, "c1", 20_000)
	}
	close, err := p.seller.Close(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := p.seller.Channel(id)
	closeRate := float64(sc.CloseFee) / float64(VSize(close))
	if closeRate >= minerFloor {
		t.Fatalf("close pays %.1f sat/vB, the test needs it below the miner floor %d", closeRate, minerFloor)
	}
	closeID := close.TxHash()
	restarted := false
	var bumps []int64
	for i := 0; i < 12 && p.confs(t, closeID) < 1; i++ {
		p.minePackages(t)
		sc, _ = p.seller.Channel(id)
		if sc.Bump != nil && (len(bumps) == 0 || bumps[len(bumps)-1] != sc.Bump.Rate) {
			bumps = append(bumps, sc.Bump.Rate)
		}
		if sc.Bump != nil && sc.Bump.Count == 1 && !restarted {
			// A restart after the first bump continues from the
			// persisted bump state (and rebroadcasts its child).
			p.seller = p.manager(t, RoleSeller)
			restarted = true
		}
	}
	if p.confs(t, closeID) < 1 {
		t.Fatalf("close %s not mined after 12 blocks; bump rates %v; channel bump %+v\n%s", closeID, bumps, sc.Bump, p.h.Logs())
	}
	sc, _ = p.seller.Channel(id)
	if sc.Bump == nil || sc.Bump.Count < 2 || len(sc.Bump.ChildTx) == 0 {
		t.Fatalf("close mined without the expected bumps: %+v", sc.Bump)
	}
	if sc.Bump.Rate < minerFloor || sc.Bump.Rate > p.cfg.MaxFeeRate {
		t.Fatalf("final package rate %d, want in [%d, max_fee_rate %d]", sc.Bump.Rate, minerFloor, p.cfg.MaxFeeRate)
	}
	child := txOf(t, sc.Bump.ChildTx)
	if p.confs(t, child.TxHash()) < 1 {
		t.Fatalf("the close was mined but not the child %s that paid for it", child.TxHash())
	}
	childFee := sc.BumpFee()
	pkgRate := float64(sc.CloseFee+childFee) / float64(VSize(close)+VSize(child))
	if pkgRate < minerFloor {
		t.Fatalf("package pays %.2f sat/vB, below the floor it was mined at", pkgRate)
	}
	if tip := p.h.Tip(t); int64(tip) >= int64(sc.Expiry) {
		t.Fatalf("close confirmed at %d, not before expiry %d", tip, sc.Expiry)
	}
	p.minePackages(t)
	if sc, _ = p.seller.Channel(id); sc.State != StateClosed {
		t.Fatalf("seller channel %s, want closed", sc.State)
	}
	got, _ := p.h.Balance(p.payout, child)
	if want := 100_000 - sc.CloseFee - childFee; got != want {
		t.Fatalf("payout after the child %d, want %d", got, want)
	}
	t.Logf("close at %.1f sat/vB (%d sat) bumped %d times (rates %v, restart after the first): child fee %d sat, package %.1f sat/vB; payout %d of 100000",
		closeRate, sc.CloseFee, sc.Bump.Count, bumps, childFee, pkgRate, got)
}

// TestRegtestRefundBumpedByReplacement: the buyer's refund after expiry,
// at 2 sat/vB, is not mined at the floor; the buyer replaces it with
// higher-fee versions until one is mined.
func TestRegtestRefundBumpedByReplacement(t *testing.T) {
	p := newBumpPair(t, nil)
	ctx := context.Background()
	id, _ := p.open(t, 500_000)
	p.pay(t, id, "c1", 10_000) // the seller never closes
	bc, _ := p.buyer.Channel(id)
	p.h.MustGenerate(t, uint32(int32(bc.Expiry)-p.h.Tip(t)))
	if err := p.buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	bc, _ = p.buyer.Channel(id)
	if bc.State != StateClosing || len(bc.SpendTx) == 0 {
		t.Fatalf("buyer channel %s after expiry, want closing with a refund", bc.State)
	}
	first := txOf(t, bc.SpendTx)
	if rate := (bc.Capacity - sumOut(first)) / VSize(first); rate >= minerFloor {
		t.Fatalf("refund at %d sat/vB, the test needs it below %d", rate, minerFloor)
	}
	var mined *wire.MsgTx
	for i := 0; i < 12 && mined == nil; i++ {
		p.minePackages(t)
		bc, _ = p.buyer.Channel(id)
		cur := txOf(t, bc.SpendTx)
		if p.confs(t, cur.TxHash()) >= 1 {
			mined = cur
		}
		if p.confs(t, first.TxHash()) >= 1 {
			t.Fatal("the first refund, below the floor, was mined")
		}
	}
	if mined == nil {
		t.Fatalf("no refund mined after 12 blocks: bump %+v", bc.Bump)
	}
	if bc.Bump == nil || bc.Bump.Count < 1 || len(bc.Bump.Replaced) != bc.Bump.Count {
		t.Fatalf("refund mined without replacements: %+v", bc.Bump)
	}
	if !slicesContains(bc.Bump.Replaced, first.TxHash().String()) {
		t.Fatalf("first refund %s not among the replaced %v", first.TxHash(), bc.Bump.Replaced)
	}
	fee := bc.Capacity - sumOut(mined)
	rate := float64(fee) / float64(VSize(mined))
	if rate < minerFloor || rate > float64(p.cfg.MaxFeeRate) {
		t.Fatalf("mined refund at %.1f sat/vB, want in [%d, %d]", rate, minerFloor, p.cfg.MaxFeeRate)
	}
	_ = p.buyer.Tick(ctx)
	if bc, _ = p.buyer.Channel(id); bc.State != StateClosed {
		t.Fatalf("buyer channel %s, want closed", bc.State)
	}
	if got, _ := p.h.Balance(bc.BuyerScript, mined); got != bc.Capacity-fee {
		t.Fatalf("refund returned %d, want %d", got, bc.Capacity-fee)
	}
	t.Logf("refund replaced %d times, mined at %.1f sat/vB (fee %d sat, %d vB)", bc.Bump.Count, rate, fee, VSize(mined))
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRegtestFundingDoubleSpent: the buyer's wallet spends the funding's
// input again and a miner takes the conflict directly (the mempool refuses
// it: the funding does not signal replacement). Both sides move the channel
// to failed with the reason, and are told (OnFail); payments are refused
// with it.
func TestRegtestFundingDoubleSpent(t *testing.T) {
	p := newBumpPair(t, func(c *Config) { c.Confirmations = 2 })
	ctx := context.Background()
	c := p.openPending(t)
	funding := txOf(t, c.FundingTx)
	conflict, err := p.h.Conflict(funding, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.h.Client().SendRawTransaction(conflict, false); err == nil {
		t.Fatal("the mempool took the conflict: the test wants it mined directly")
	}
	if _, err := p.h.MineTxs(conflict); err != nil {
		t.Fatal(err)
	}
	if n := p.confs(t, funding.TxHash()); n >= 0 {
		t.Fatalf("funding still known (%d confs) after its conflict was mined", n)
	}
	// One confirmation of the conflict: not yet buried as deep as a
	// funding must be (payment.confirmations 2).
	for _, m := range []*Manager{p.buyer, p.seller} {
		_ = m.Tick(ctx)
	}
	p.wantState(t, c.ID, StatePending)
	p.minePackages(t)
	p.wantState(t, c.ID, StateFailed)
	for _, m := range []*Manager{p.buyer, p.seller} {
		ch, _ := m.Channel(c.ID)
		if !strings.HasPrefix(ch.FailReason, FailDoubleSpent) || !strings.Contains(ch.FailReason, conflict.TxHash().String()) {
			t.Fatalf("%s fail reason %q", ch.Role, ch.FailReason)
		}
	}
	p.mu.Lock()
	nb, ns := len(p.failed[RoleBuyer]), len(p.failed[RoleSeller])
	p.mu.Unlock()
	if nb != 1 || ns != 1 {
		t.Fatalf("OnFail told buyer %d and seller %d times, want once each", nb, ns)
	}
	if err := p.seller.WaitOpen(ctx, c.ID, 0, 0); !errors.Is(err, ErrNotOpen) || !strings.Contains(err.Error(), FailDoubleSpent) {
		t.Fatalf("WaitOpen on the failed channel: %v", err)
	}
	// Failed stays failed: more blocks change nothing and tell no one again.
	p.minePackages(t)
	p.wantState(t, c.ID, StateFailed)
	if len(p.failed[RoleSeller]) != 1 {
		t.Fatal("OnFail told twice")
	}
	t.Logf("seller: %s", p.failed[RoleSeller][0].FailReason)
}

// TestRegtestFundingNeverConfirms: a funding at 2 sat/vB sits in the
// mempool while the miners' floor is 5 sat/vB; after funding_timeout
// blocks both sides fail the channel. When it confirms after all, the
// channel is watched again and the buyer's coins come back by its refund.
func TestRegtestFundingNeverConfirms(t *testing.T) {
	p := newBumpPair(t, func(c *Config) { c.FundingTimeout = 4 })
	ctx := context.Background()
	c := p.openPending(t)
	for _, m := range []*Manager{p.buyer, p.seller} {
		_ = m.Tick(ctx)
	}
	start := p.h.Tip(t)
	for i := 0; i < 10; i++ {
		p.minePackages(t)
		bc, _ := p.buyer.Channel(c.ID)
		if bc.State != StatePending {
			break
		}
	}
	p.wantState(t, c.ID, StateFailed)
	if n := p.confs(t, c.FundingTxid()); n != 0 {
		t.Fatalf("funding has %d confirmations, want 0 (in the mempool, never mined)", n)
	}
	waited := p.h.Tip(t) - start
	if waited != p.cfg.FundingTimeout {
		t.Fatalf("failed after %d blocks, want funding_timeout %d", waited, p.cfg.FundingTimeout)
	}
	for _, m := range []*Manager{p.buyer, p.seller} {
		ch, _ := m.Channel(c.ID)
		if !strings.HasPrefix(ch.FailReason, FailNotConfirmed) {
			t.Fatalf("%s fail reason %q", ch.Role, ch.FailReason)
		}
	}
	if len(p.failed[RoleBuyer]) != 1 || len(p.failed[RoleSeller]) != 1 {
		t.Fatalf("OnFail told %d/%d times", len(p.failed[RoleBuyer]), len(p.failed[RoleSeller]))
	}
	t.Logf("failed after %d blocks: %s", waited, p.failed[RoleSeller][0].FailReason)

	// The funding, never double-spent, confirms after all (a miner takes
	// it): the coins it locked are not lost. Both sides watch the channel
	// again; it opens, and the buyer refunds it at its expiry.
	p.mine(t, 1)
	p.mine(t, 1)
	p.wantState(t, c.ID, StateOpen)
	bc, _ := p.buyer.Channel(c.ID)
	p.h.MustGenerate(t, uint32(int32(bc.Expiry)-p.h.Tip(t)))
	if err := p.buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	p.h.MustGenerate(t, 1)
	_ = p.buyer.Tick(ctx)
	bc, _ = p.buyer.Channel(c.ID)
	if bc.State != StateClosed || bc.SpendFee() <= 0 {
		t.Fatalf("revived channel %s after its expiry, want closed by the buyer's refund", bc.State)
	}
	if got, _ := p.h.Balance(bc.BuyerScript, txOf(t, bc.SpendTx)); got != bc.Capacity-bc.SpendFee() {
		t.Fatalf("refund of the revived channel returned %d of %d", got, bc.Capacity)
	}
}
