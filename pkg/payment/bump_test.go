package payment

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// notOurs is a wallet that holds no key of the payout script.
type notOurs struct{}

func (notOurs) SignOutput(*wire.MsgTx, int, []byte, int64, txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	return nil, ErrNotOurs
}

// bumpSetup opens a channel on the in-memory chain, pays the seller and
// has it close (the close stays unconfirmed: only MineEmpty is used after).
func bumpSetup(t *testing.T, signer OutputSigner, tweak func(*Config)) (*paytest.Chain, *Manager, *MemStore, string, Config) {
	t.Helper()
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	payout, _ := txscript.PayToAddrScript(a)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
	cfg.Confirmations = 1
	cfg.BumpAfter = 1
	cfg.MaxFeeRate = 20
	cfg.FallbackFeeRate = 2
	if tweak != nil {
		tweak(&cfg)
	}
	if signer == nil {
		signer = keySignerFor(key, payout)
	}
	chain := paytest.NewChain()
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain))
	sst := NewMemStore()
	keys, _ := NewKeyring(seed(2), &chaincfg.RegressionNetParams)
	seller, err := NewManager(ManagerConfig{Config: cfg, Chain: chain, Store: sst, Keys: keys, Log: testLogger(t), Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	id := paidClose(t, chain, buyer, seller, 1_000_000, "c1", 200_000)
	return chain, seller, sst, id, cfg
}

// paidClose opens a channel of capacity from buyer to seller at 2 sat/vB,
// mines its funding, pays amount for contract and has the seller close it
// (unmined). It returns the channel's ID.
func paidClose(t *testing.T, chain *paytest.Chain, buyer, seller *Manager, capacity int64, contract string, amount int64) string {
	t.Helper()
	ctx := context.Background()
	terms, _ := seller.SellerTerms()
	c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: capacity, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptOpen(ctx, "b", req.Encode()); err != nil {
		t.Fatal(err)
	}
	chain.Mine(1)
	_ = buyer.Tick(ctx)
	_ = seller.Tick(ctx)
	u, err := buyer.Pay(ctx, c.ID, contract, amount)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := seller.Close(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func txOf(t *testing.T, raw []byte) *wire.MsgTx {
	t.Helper()
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	return &tx
}

func keySignerFor(key *btcec.PrivateKey, script []byte) OutputSigner {
	return signerFunc(func(tx *wire.MsgTx, idx int, pk []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
		if string(pk) != string(script) {
			return nil, ErrNotOurs
		}
		return txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, prevs), idx, amount, pk, txscript.SigHashAll, key, true)
	})
}

type signerFunc func(*wire.MsgTx, int, []byte, int64, txscript.PrevOutputFetcher) (wire.TxWitness, error)

func (f signerFunc) SignOutput(tx *wire.MsgTx, idx int, pk []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	return f(tx, idx, pk, amount, prevs)
}

// tickBlocks mines n empty blocks, ticking the manager after each.
func tickBlocks(t *testing.T, chain *paytest.Chain, m *Manager, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		chain.MineEmpty(1)
		_ = m.Tick(context.Background())
	}
}

// TestBumpCloseEscalatesWithinBounds: every BumpAfter blocks the child
// raises the pair's rate (1.5x, at least +1), never above max_fee_rate;
// at the bound it stops and says why.
func TestBumpCloseEscalatesWithinBounds(t *testing.T) {
	chain, seller, _, id, cfg := bumpSetup(t, nil, nil)
	var rates []int64
	for i := 0; i < 12; i++ {
		tickBlocks(t, chain, seller, 1)
		c, _ := seller.Channel(id)
		if c.Bump != nil && (len(rates) == 0 || rates[len(rates)-1] != c.Bump.Rate) {
			rates = append(rates, c.Bump.Rate)
		}
	}
	c, _ := seller.Channel(id)
	for i := 1; i < len(rates); i++ {
		if rates[i] <= rates[i-1] || rates[i] > cfg.MaxFeeRate {
			t.Fatalf("rates %v: not increasing within max_fee_rate %d", rates, cfg.MaxFeeRate)
		}
	}
	if rates[len(rates)-1] != cfg.MaxFeeRate || !strings.Contains(c.Bump.Stuck, "max_fee_rate") {
		t.Fatalf("rates %v, stuck %q: want to end at max_fee_rate and say so", rates, c.Bump.Stuck)
	}
	if c.Bump.Count != len(rates)-1 || len(c.Bump.ChildTx) == 0 {
		t.Fatalf("bump %+v after rates %v", c.Bump, rates)
	}
}

// TestBumpCloseNearExpiryGoesToMax: within 2*BumpAfter blocks of the
// expiry, the next bump is at max_fee_rate at once.
func TestBumpCloseNearExpiryGoesToMax(t *testing.T) {
	chain, seller, _, id, cfg := bumpSetup(t, nil, func(c *Config) { c.BumpAfter = 3 })
	c, _ := seller.Channel(id)
	tip, _ := chain.Tip(context.Background())
	chain.MineEmpty(int32(c.Expiry) - tip - 2*cfg.BumpAfter - 1)
	_ = seller.Tick(context.Background()) // starts the clock
	tickBlocks(t, chain, seller, int(cfg.BumpAfter))
	c, _ = seller.Channel(id)
	if c.Bump == nil || c.Bump.Count != 1 || c.Bump.Rate != cfg.MaxFeeRate {
		t.Fatalf("bump near expiry %+v, want one bump at max_fee_rate %d", c.Bump, cfg.MaxFeeRate)
	}
}

// TestBumpCloseExternalPayoutIsStuck: a payout the wallet cannot spend
// leaves the close unbumped, with the reason, and broadcasts no child.
func TestBumpCloseExternalPayoutIsStuck(t *testing.T) {
	chain, seller, _, id, _ := bumpSetup(t, notOurs{}, nil)
	tickBlocks(t, chain, seller, 4)
	c, _ := seller.Channel(id)
	if c.Bump == nil || c.Bump.Count != 0 || len(c.Bump.ChildTx) != 0 || !strings.Contains(c.Bump.Stuck, "payout address is not the node wallet's") {
		t.Fatalf("bump %+v", c.Bump)
	}
}

// TestBumpPersistedBeforeBroadcast: a child the chain refuses is still
// recorded first; a restart rebroadcasts it, and bumps again later.
func TestBumpPersistedBeforeBroadcast(t *testing.T) {
	chain, seller, sst, id, cfg := bumpSetup(t, nil, nil)
	tickBlocks(t, chain, seller, 1) // starts the clock
	chain.BcastErr = errors.New("node unreachable")
	tickBlocks(t, chain, seller, 1)
	c, _ := seller.Channel(id)
	if c.Bump == nil || c.Bump.Count != 1 || len(c.Bump.ChildTx) == 0 {
		t.Fatalf("bump not persisted when its broadcast failed: %+v", c.Bump)
	}
	chain.BcastErr = nil
	keys, _ := NewKeyring(seed(2), &chaincfg.RegressionNetParams)
	again, err := NewManager(ManagerConfig{Config: cfg, Chain: chain, Store: sst, Keys: keys, Log: testLogger(t), Signer: seller.signer})
	if err != nil {
		t.Fatal(err)
	}
	_ = again.Tick(context.Background())
	child := txOf(t, c.Bump.ChildTx)
	if n, _ := chain.Confirmations(context.Background(), child.TxHash()); n != 0 {
		t.Fatalf("the restarted manager did not rebroadcast the child (%d)", n)
	}
	tickBlocks(t, chain, again, 1)
	if c2, _ := again.Channel(id); c2.Bump.Count != 2 || c2.Bump.Rate <= c.Bump.Rate {
		t.Fatalf("after the restart: %+v, before %+v", c2.Bump, c.Bump)
	}
}

// TestConfigBumpAndFundingBounds: bump_after must leave room for two bumps
// within the safety margin; funding_timeout must be positive.
func TestConfigBumpAndFundingBounds(t *testing.T) {
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"bump_after", func(c *Config) { c.BumpAfter = 0 }},
		{"bump_after", func(c *Config) { c.BumpAfter = c.SafetyMargin/2 + 1 }},
		{"funding_timeout", func(c *Config) { c.FundingTimeout = 0 }},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v", tc.key, err)
		}
	}
	c := DefaultConfig()
	c.BumpAfter = c.SafetyMargin / 2
	if err := c.Validate(); err != nil {
		t.Fatalf("bump_after at half the safety margin: %v", err)
	}
}
