package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// TestUpdateSignatureRefusedInMemory: the seller does not sign an update
// (its slot holds checkSig, vouched for by the signature cache), so the
// engine's one real verification must be the buyer's: a signature by
// another key, for another amount, or checkSig itself is refused with
// ErrBadSignature and changes nothing; the good one is then accepted.
func TestUpdateSignatureRefusedInMemory(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	good, err := p.buyer.Pay(ctx, p.id, "c", 1000)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := p.buyer.Channel(p.id)
	ws, _ := c.Script()
	tx, _ := c.CloseTx(good.Amount)
	other, err := SignInput(tx, 0, ws, c.Capacity, mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tx2, _ := c.CloseTx(good.Amount - 1)
	buyerKey, _ := p.buyer.keys.Key(FamilyChannelBuyer, c.KeyIndex)
	lower, _ := SignInput(tx2, 0, ws, c.Capacity, buyerKey)
	for name, sig := range map[string][]byte{
		"other key":      other,
		"other amount":   lower,
		"check sig":      append(bytes.Clone(checkSig), byte(txscript.SigHashAll)),
		"truncated":      good.Sig[:len(good.Sig)-2],
		"no hashtype":    good.Sig[:len(good.Sig)-1],
		"empty":          {},
		"seller's check": append(append([]byte(nil), checkSig...), 0x02),
	} {
		bad := *good
		bad.Sig = sig
		if _, err := p.seller.AcceptUpdate(ctx, "b", bad.Encode()); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
		if sc, _ := p.seller.Channel(p.id); sc.Seq != 0 || sc.Paid != 0 {
			t.Fatalf("%s: refused update changed the channel: seq %d paid %d", name, sc.Seq, sc.Paid)
		}
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", good.Encode()); err != nil {
		t.Fatal(err)
	}
	// The close the seller broadcasts carries its real signature and
	// passes the engine with no cache.
	if _, err := p.seller.Close(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	sc, _ := p.seller.Channel(p.id)
	pk, _ := sc.PkScript()
	if err := verifySpend(sc, pk); err != nil {
		t.Fatal(err)
	}
}

func verifySpend(c *Channel, pk []byte) error {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.SpendTx)); err != nil {
		return err
	}
	return VerifyInput(&tx, 0, pk, c.Capacity)
}

// TestConcurrentChannels runs many channels at once on one buyer and one
// seller Manager (meant for -race): one goroutine per channel pays and
// gets acknowledged, except on the last channel, where two goroutines pay
// at once on the buyer side; Tick, Channels and LatestUpdate run alongside. Every channel ends with exactly
// its payments, in order, on both sides and in the stores.
func TestConcurrentChannels(t *testing.T) {
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
	cfg.Confirmations = 1
	chain := paytest.NewChain()
	bst, sst := NewMemStore(), NewMemStore()
	// Both sides keep a channel backup, written on every change.
	dir := t.TempDir()
	bbk, err := NewBackupStore(bst, filepath.Join(dir, "buyer.backup"))
	if err != nil {
		t.Fatal(err)
	}
	sbk, err := NewBackupStore(sst, filepath.Join(dir, "seller.backup"))
	if err != nil {
		t.Fatal(err)
	}
	buyer := newManager(t, cfg, chain, bbk, seed(1), paytest.NewFunder(chain))
	seller := newManager(t, cfg, chain, sbk, seed(2), nil)
	ctx := context.Background()
	terms, _ := seller.SellerTerms()
	const n, per = 8, 15
	ids := make([]string, n)
	for i := range ids {
		c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 1_000_000, FeeRate: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := seller.AcceptOpen(ctx, fmt.Sprintf("b%d", i), req.Encode()); err != nil {
			t.Fatal(err)
		}
		ids[i] = c.ID
	}
	chain.Mine(1)
	for _, m := range []*Manager{buyer, seller} {
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, id := range ids[:n-1] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < per; k++ {
				u, err := buyer.Pay(ctx, id, "c", 1000)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := seller.AcceptUpdate(ctx, fmt.Sprintf("b%d", i), u.Encode()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Two payers on the last channel's buyer side at once: every Pay
	// gets its own sequence number.
	seqs := make(chan uint64, 2*per)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < per; k++ {
				u, err := buyer.Pay(ctx, ids[n-1], "c", 1000)
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- u.Seq
			}
		}()
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = seller.Tick(ctx)
			_ = buyer.Tick(ctx)
			_ = seller.Channels()
			_, _ = buyer.LatestUpdate(ids[1], "c")
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("sequence %d handed out twice", s)
		}
		seen[s] = true
	}
	// The last channel's seller side has seen none of them: the buyer's
	// latest update covers them all.
	u, _ := buyer.LatestUpdate(ids[n-1], "c")
	if _, err := seller.AcceptUpdate(ctx, fmt.Sprintf("b%d", n-1), u.Encode()); err != nil {
		t.Fatal(err)
	}
	reload := func(st ChannelStore, sd byte) *Manager { return newManager(t, cfg, chain, st, seed(sd), nil) }
	// What a node that lost its database gets back from its backup.
	restored := func(bk *BackupStore, sd byte) *Manager {
		b, err := ReadChannelBackup(bk.Path())
		if err != nil {
			t.Fatal(err)
		}
		st := NewMemStore()
		if err := RestoreChannelBackup(b, st); err != nil {
			t.Fatal(err)
		}
		return reload(st, sd)
	}
	for _, m := range []*Manager{buyer, seller, reload(bst, 1), reload(sst, 2), restored(bbk, 1), restored(sbk, 2)} {
		for i, id := range ids {
			c, err := m.Channel(id)
			if err != nil {
				t.Fatal(err)
			}
			seq := uint64(per)
			if i == n-1 {
				seq = 2 * per
			}
			if c.State != StateOpen || c.Seq != seq || c.Paid != int64(seq)*1000 || c.Contracts["c"] != c.Paid {
				t.Fatalf("%s channel %d: %s seq %d paid %d contracts %v", c.Role, i, c.State, c.Seq, c.Paid, c.Contracts)
			}
		}
	}
}
