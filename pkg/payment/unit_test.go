package payment

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// memPair is a buyer and a seller on the in-memory chain, channel open.
type memPair struct {
	chain         *paytest.Chain
	buyer, seller *Manager
	id            string
}

func newMemPair(tb testing.TB, bst, sst ChannelStore) *memPair {
	tb.Helper()
	key := mustKey(tb)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
	cfg.Confirmations = 1
	chain := paytest.NewChain()
	p := &memPair{chain: chain}
	p.buyer = newManager(tb, cfg, chain, bst, seed(1), paytest.NewFunder(chain))
	p.seller = newManager(tb, cfg, chain, sst, seed(2), nil)
	ctx := context.Background()
	terms, err := p.seller.SellerTerms()
	if err != nil {
		tb.Fatal(err)
	}
	c, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 100_000_000, FeeRate: 2})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := p.seller.AcceptOpen(ctx, "b", req.Encode()); err != nil {
		tb.Fatal(err)
	}
	chain.Mine(1)
	for _, m := range []*Manager{p.buyer, p.seller} {
		if err := m.Tick(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	p.id = c.ID
	return p
}

// pay is the buyer paying amount more for contract and the seller
// accepting it; it returns the update.
func (p *memPair) pay(tb testing.TB, contract string, amount int64) *Update {
	tb.Helper()
	ctx := context.Background()
	u, err := p.buyer.Pay(ctx, p.id, contract, amount)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		tb.Fatal(err)
	}
	return u
}

func TestUpdateEncoding(t *testing.T) {
	u := &Update{ChannelID: wire.OutPoint{Index: 3}, Seq: 9, Amount: 12345, ContractID: "c-1",
		ContractAmount: 45, PayScript: []byte{0, 20, 1}, Sig: bytes.Repeat([]byte{7}, 71)}
	got, err := DecodeUpdate(u.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), u.Encode()) || got.Amount != u.Amount || got.ContractID != "c-1" {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range [][]byte{nil, {2}, u.Encode()[:10], append(u.Encode(), 0)} {
		if _, err := DecodeUpdate(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("decode %x: %v, want ErrMalformed", bad, err)
		}
	}
}

func TestMemChannelLifecycle(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		u, err := p.buyer.Pay(ctx, p.id, "c", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.buyer.Close(ctx, p.id); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("buyer close: %v", err)
	}
	if _, err := p.seller.Close(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	p.chain.Mine(1)
	for _, m := range []*Manager{p.buyer, p.seller} {
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		c, _ := m.Channel(p.id)
		if c.State != StateClosed || c.Paid != 10_000 {
			t.Fatalf("%s: %s paid %d", c.Role, c.State, c.Paid)
		}
	}
}

func FuzzDecodeUpdate(f *testing.F) {
	u := &Update{ChannelID: wire.OutPoint{Index: 1}, Seq: 1, Amount: 10, ContractID: "x", ContractAmount: 10,
		PayScript: []byte{0, 20}, Sig: []byte{0x30, 1}}
	f.Add(u.Encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		u, err := DecodeUpdate(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(u.Encode(), p) {
			t.Fatalf("decode/encode not canonical")
		}
	})
}

func FuzzDecodeOpenRequest(f *testing.F) {
	o := &OpenRequest{BuyerKey: make([]byte, 33), SellerKey: make([]byte, 33), Expiry: 100, CloseFee: 300,
		SellerScript: []byte{0, 20}, BuyerScript: []byte{0, 20}, FundingTx: []byte{1, 2, 3}, Vout: 1}
	f.Add(o.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		o, err := DecodeOpenRequest(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		// The fields are canonical; an extension may hold fields a later
		// version reads, which this one drops (openhints.go).
		again, err := DecodeOpenRequest(o.Encode())
		if err != nil || !reflect.DeepEqual(again, o) {
			t.Fatalf("decode/encode/decode changed it: %+v %v", again, err)
		}
		if len(o.InputHeights) == 0 && !bytes.HasPrefix(p, o.Encode()) {
			t.Fatalf("decode/encode not canonical")
		}
	})
}

// FuzzAcceptUpdate feeds arbitrary (and mutated valid) updates to a
// seller: it must never panic, and a refused update must change nothing.
func FuzzAcceptUpdate(f *testing.F) {
	p := newMemPair(f, NewMemStore(), NewMemStore())
	ctx := context.Background()
	good, err := p.buyer.Pay(ctx, p.id, "c", 500)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Encode())
	f.Add(good.Encode()[:50])
	f.Fuzz(func(t *testing.T, msg []byte) {
		before, _ := p.seller.Channel(p.id)
		if _, err := p.seller.AcceptUpdate(ctx, "b", msg); err != nil {
			after, _ := p.seller.Channel(p.id)
			if after.Seq != before.Seq || after.Paid != before.Paid {
				t.Fatalf("refused update changed state: %v", err)
			}
		}
	})
}

func FuzzAcceptOpen(f *testing.F) {
	p := newMemPair(f, NewMemStore(), NewMemStore())
	terms, _ := p.seller.SellerTerms()
	_, req, err := p.buyer.OpenChannel(context.Background(), OpenParams{Peer: "s", Seller: terms, Capacity: 50_000, FeeRate: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req.Encode())
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, _ = p.seller.AcceptOpen(context.Background(), "b", msg)
	})
}

// BenchmarkChannelUpdate measures one payment end to end on the in-memory
// store: the buyer signs, the seller signs its half, runs the script engine
// on the close and persists; next to it, raw btcec sign+verify.
func BenchmarkChannelUpdate(b *testing.B) {
	p := newMemPair(b, NewMemStore(), NewMemStore())
	b.ReportAllocs()
	payLoop(b, p)
	ups := float64(b.N) / b.Elapsed().Seconds()
	raw := RawSignVerify(2000)
	b.ReportMetric(ups, "updates/s")
	b.ReportMetric(2000/raw.Seconds(), "raw_signverify/s")
	b.ReportMetric(ups/(2000/raw.Seconds()), "ratio")
}

// BenchmarkRawSignVerify is the floor an update is compared with: one ECDSA
// signature and one verification with btcec.
func BenchmarkRawSignVerify(b *testing.B) {
	d := RawSignVerify(b.N)
	b.ReportMetric(float64(b.N)/d.Seconds(), "ops/s")
}

// BenchmarkVBytesPerContract reports on-chain virtual bytes per contract
// for a channel that carries 1, 10 or 100 contracts: funding plus close,
// whatever the number of updates.
func BenchmarkVBytesPerContract(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(strconv.Itoa(n)+"_contracts", func(b *testing.B) {
			var vb int64
			for i := 0; i < b.N; i++ {
				vb = ChannelChainVBytes()
			}
			b.ReportMetric(float64(vb)/float64(n), "vB/contract")
		})
	}
}

// TestDustFoldedAndExhaustedClose pays all but a dust amount: the close has
// a single output (the buyer's dust goes to the fee), passes the script
// engine, and the seller's Tick closes the exhausted channel by itself.
func TestDustFoldedAndExhaustedClose(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	c, _ := p.buyer.Channel(p.id)
	u, err := p.buyer.Pay(ctx, p.id, "c", c.Capacity-100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.buyer.Pay(ctx, p.id, "c", 101); !errors.Is(err, ErrOverCapacity) {
		t.Fatalf("pay past capacity: %v", err)
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	sc, _ := p.seller.Channel(p.id)
	if sc.State != StateClosing {
		t.Fatalf("exhausted channel is %s, want closing", sc.State)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(sc.SpendTx)); err != nil {
		t.Fatal(err)
	}
	if len(tx.TxOut) != 1 || tx.TxOut[0].Value != sc.Paid-sc.CloseFee {
		t.Fatalf("close outputs %v", tx.TxOut)
	}
	pk, _ := sc.PkScript()
	if err := VerifyInput(&tx, 0, pk, sc.Capacity); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateAndXpubPayout(t *testing.T) {
	cfg := RegtestConfig()
	cfg.PayoutSweep = false
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"network", func(c *Config) { c.Network = "moon" }},
		{"max_fee_rate", func(c *Config) { c.MaxFeeRate = 0 }},
		{"confirmations", func(c *Config) { c.Confirmations = 0 }},
		{"payout_address", func(c *Config) { c.PayoutAddress = "bc1qnotregtest" }},
		{"payout_xpub", func(c *Config) { c.PayoutXpub = "xpub-garbage" }},
		{"channel_lifetime", func(c *Config) { c.ChannelLifetime = c.SafetyMargin }},
		{"close_idle", func(c *Config) { c.CloseIdle = -time.Second }},
		{"close_at", func(c *Config) { c.CloseAt = -1 }},
	} {
		c := RegtestConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v", tc.key, err)
		}
	}
	master, _ := hdkeychain.NewMaster(seed(5), &chaincfg.RegressionNetParams)
	acct, _ := master.Derive(hdkeychain.HardenedKeyStart + 84)
	xpub, _ := acct.Neuter()
	cfg.PayoutXpub = xpub.String()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, _ := cfg.PayoutScript(0)
	b, _ := cfg.PayoutScript(1)
	if bytes.Equal(a, b) || len(a) != 22 {
		t.Fatalf("xpub payout scripts %x %x", a, b)
	}
	// A seller paying to an xpub hands out a fresh script per channel, in
	// order (children 0, 1, 2, …: no gap a wallet's gap limit would miss,
	// however many contracts ask for terms), and accepts channels paying
	// any of them.
	chain := paytest.NewChain()
	seller := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain))
	for i := range uint32(3) {
		want, _ := cfg.PayoutScript(i)
		t1, _ := seller.SellerTerms()
		t2, _ := seller.SellerTerms() // a contract on an existing channel
		if !bytes.Equal(t1.PayoutScript, want) || !bytes.Equal(t2.PayoutScript, want) {
			t.Fatalf("channel %d: terms pay %x, %x; want child %d %x", i, t1.PayoutScript, t2.PayoutScript, i, want)
		}
		_, req, err := buyer.OpenChannel(context.Background(), OpenParams{Peer: "s", Seller: t2, Capacity: 100_000, FeeRate: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := seller.AcceptOpen(context.Background(), "b", req.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	// A channel paying a child far past the last used is not ours to
	// accept (a wallet would not find it).
	far, _ := cfg.PayoutScript(3 + payoutGap)
	if seller.ownPayoutScript(far) {
		t.Fatal("a child past the gap is accepted")
	}
}

// TestUpdateTooCloseToExpiry: inside the safety margin the seller takes no
// more payments it could not settle before the buyer may refund.
func TestUpdateTooCloseToExpiry(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	c, _ := p.seller.Channel(p.id)
	tip, _ := p.chain.Tip(ctx)
	p.chain.Mine(int32(c.Expiry) - RegtestConfig().SafetyMargin - tip)
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := p.buyer.Pay(ctx, p.id, "c", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); !errors.Is(err, ErrTooLate) {
		t.Fatalf("update inside the safety margin: %v, want ErrTooLate", err)
	}
}

// payLoop times b.N payments of 1 sat from p's buyer to its seller, each
// signed, sent, checked and persisted.
func payLoop(b *testing.B, p *memPair) {
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u, err := p.buyer.Pay(ctx, p.id, "c", 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}
