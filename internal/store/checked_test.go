package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// crashCopyOf copies a database and its payment log as a process killed
// now leaves them (the page cache) and returns the copy's path.
func crashCopyOf(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", store.PaylogSuffix} {
		raw, err := os.ReadFile(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// sellerChannelAt opens the copy at path and returns channel id as the
// store loads it.
func sellerChannelAt(t *testing.T, path, id string) *payment.Channel {
	t.Helper()
	db, err := store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	list, err := store.NewPaymentStore(db).LoadChannels()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("channel %s not in %s", id, path)
	return nil
}

// TestCheckedUpdateReplay: the seller's updates are written while their
// signature is checked (records marked unchecked in the payment log). What
// a killed seller leaves replays to the newest acknowledged update, each
// record checked again; an update with a forged signature, refused, is on
// disk but never loaded (the previous update stands), neither by the
// running seller nor after a crash; the next good update is taken.
func TestCheckedUpdateReplay(t *testing.T) {
	p := newBoltPair(t, 1, true)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		p.update(t, 0)
	}
	if t.Failed() {
		t.FailNow()
	}
	id := p.ids[0]
	if c := sellerChannelAt(t, crashCopyOf(t, p.sellerDB), id); c.Seq != 3 || c.Paid != 3 {
		t.Fatalf("after a crash: seq %d paid %d, want 3 3", c.Seq, c.Paid)
	}

	u, err := p.buyer.Pay(ctx, id, "c", 1)
	if err != nil {
		t.Fatal(err)
	}
	forged := *u
	forged.Sig = append([]byte(nil), u.Sig...)
	forged.Sig[len(forged.Sig)/2] ^= 1
	if _, err := p.seller.AcceptUpdate(ctx, p.peers[0], forged.Encode()); !errors.Is(err, payment.ErrBadSignature) {
		t.Fatalf("forged update: %v, want ErrBadSignature", err)
	}
	if c, _ := p.seller.Channel(id); c.Seq != 3 {
		t.Fatalf("the seller took the forged update: seq %d", c.Seq)
	}
	if c := sellerChannelAt(t, crashCopyOf(t, p.sellerDB), id); c.Seq != 3 || c.Paid != 3 {
		t.Fatalf("after a crash following a forged update: seq %d paid %d, want 3 3", c.Seq, c.Paid)
	}
	if c := sellerChannelAt(t, crashCopyOf(t, p.sellerDB), id); payment.VerifyUpdateSig(c) != nil {
		t.Fatalf("replayed channel does not verify: %v", payment.VerifyUpdateSig(c))
	}

	if _, err := p.seller.AcceptUpdate(ctx, p.peers[0], u.Encode()); err != nil {
		t.Fatal(err)
	}
	if c := sellerChannelAt(t, crashCopyOf(t, p.sellerDB), id); c.Seq != 4 || c.Paid != 4 {
		t.Fatalf("after the good update and a crash: seq %d paid %d, want 4 4", c.Seq, c.Paid)
	}
}

// TestVerifyUpdateSig: what a seller accepted verifies on its own; a
// changed amount or signature does not.
func TestVerifyUpdateSig(t *testing.T) {
	p := newBoltPair(t, 1, false)
	p.update(t, 0)
	c, err := p.seller.Channel(p.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := payment.VerifyUpdateSig(c); err != nil {
		t.Fatalf("accepted update: %v", err)
	}
	more := *c
	more.Paid++
	if err := payment.VerifyUpdateSig(&more); !errors.Is(err, payment.ErrBadSignature) {
		t.Fatalf("amount changed: %v", err)
	}
	bad := *c
	bad.BuyerSig = append([]byte(nil), c.BuyerSig...)
	bad.BuyerSig[10] ^= 1
	if err := payment.VerifyUpdateSig(&bad); !errors.Is(err, payment.ErrBadSignature) {
		t.Fatalf("signature changed: %v", err)
	}
	swapped := *c
	swapped.BuyerKey, swapped.SellerKey = c.SellerKey, c.BuyerKey
	if err := payment.VerifyUpdateSig(&swapped); err == nil {
		t.Fatal("keys swapped: verified")
	}
	b, _ := p.buyer.Channel(p.ids[0])
	if err := payment.VerifyUpdateSig(b); err != nil {
		t.Fatalf("buyer's record: %v", err)
	}
}
