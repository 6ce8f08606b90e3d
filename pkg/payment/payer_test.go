package payment

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
)

// miner mines a block on the in-memory chain every few milliseconds until
// the test ends, so that waiting opens confirm.
func miner(t *testing.T, p *memPair) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				p.chain.Mine(1)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// minedPair is newMemPair over bst and sst with a miner, and its seller's
// encoded terms.
func minedPair(t *testing.T, bst, sst ChannelStore) (*memPair, []byte) {
	t.Helper()
	p := newMemPair(t, bst, sst)
	miner(t, p)
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	return p, terms.Encode()
}

// TestPayerEnsureChannel: concurrent contracts to one seller open one
// channel (of MinCapacity, more than twice the contract), later contracts
// reuse it while it has room, a contract too big for it opens another,
// Pay is idempotent per contract total, and bad terms open nothing.
func TestPayerEnsureChannel(t *testing.T) {
	p, enc := minedPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	payer := NewPayer(p.buyer, PayerConfig{MinCapacity: 100_000, OpenWait: 10 * time.Second, Poll: 5 * time.Millisecond})
	const peer = "s2"
	var (
		wg   sync.WaitGroup
		reqs = make([]*OpenRequest, 4)
		errs = make([]error, 4)
	)
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs[i], errs[i] = payer.EnsureChannel(ctx, peer, enc, 10_000)
		}()
	}
	wg.Wait()
	// Every contract hands the seller the open of the one channel while
	// its funding is unconfirmed (EnsureChannel does not wait for it).
	opened := map[string]bool{}
	for i, r := range reqs {
		if errs[i] != nil {
			t.Fatalf("contract %d: %v", i, errs[i])
		}
		if r != nil {
			id, err := r.ChannelID()
			if err != nil {
				t.Fatal(err)
			}
			opened[id] = true
			if _, err := p.seller.AcceptOpen(ctx, "b", r.Encode()); err != nil {
				t.Fatal(err)
			}
		}
	}
	var chans []*Channel
	for _, c := range p.buyer.Channels() {
		if c.Peer == peer {
			chans = append(chans, c)
		}
	}
	if len(opened) != 1 || len(chans) != 1 {
		t.Fatalf("4 concurrent contracts opened %d channels by their requests, %d channels; want 1", len(opened), len(chans))
	}
	if err := p.buyer.WaitOpen(ctx, chans[0].ID, 10*time.Second, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	chans[0], _ = p.buyer.Channel(chans[0].ID)
	if chans[0].Capacity != 100_000 || chans[0].State != StateOpen {
		t.Fatalf("channel %s capacity %d, want 100000 open", chans[0].State, chans[0].Capacity)
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	// Pay: cumulative totals per contract, idempotent.
	u1, err := payer.Pay(ctx, peer, "c1", 1000)
	if err != nil {
		t.Fatal(err)
	}
	again, err := payer.Pay(ctx, peer, "c1", 1000)
	if err != nil || !bytes.Equal(again.Encode(), u1.Encode()) {
		t.Fatalf("repeat pay: %v, same update %v", err, err == nil && bytes.Equal(again.Encode(), u1.Encode()))
	}
	u2, err := payer.Pay(ctx, peer, "c1", 3000)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Amount != 3000 || u2.ContractAmount != 3000 || u2.Seq != 2 {
		t.Fatalf("second pay: amount %d contract %d seq %d", u2.Amount, u2.ContractAmount, u2.Seq)
	}
	for _, u := range []*Update{u1, u2} {
		if _, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c1", u.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := payer.Pay(ctx, "nobody", "c1", 1000); !errors.Is(err, ErrUnknownChannel) {
		t.Fatalf("pay with no channel: %v, want ErrUnknownChannel", err)
	}
	// A contract bigger than the room left opens a second channel.
	r, err := payer.EnsureChannel(ctx, peer, enc, 99_000)
	if err != nil || r == nil {
		t.Fatalf("big contract: request %v, %v", r != nil, err)
	}
	// Bad terms: refused before any money moves.
	before := len(p.buyer.Channels())
	for _, bad := range [][]byte{nil, {2}, enc[:10], append(bytes.Clone(enc), 0)} {
		if _, err := payer.EnsureChannel(ctx, "s3", bad, 1000); !errors.Is(err, ErrMalformed) {
			t.Errorf("terms %x: %v, want ErrMalformed", bad, err)
		}
	}
	if n := len(p.buyer.Channels()); n != before {
		t.Fatalf("bad terms opened channels: %d → %d", before, n)
	}
}

// waiting blocks until something waits on m's changes.
func waiting(t *testing.T, m *Manager) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		m.mu.Lock()
		w := m.changed != nil
		m.mu.Unlock()
		if w {
			return
		}
	}
	t.Fatal("nothing waits for its turn")
}

// outOfOrder pays contract c1 1000 and then c2 2000 on one channel, and
// checks that the seller, not waiting for its turn, refuses update 2
// before update 1.
func outOfOrder(t *testing.T) (p *memPair, u1, u2 *Update) {
	t.Helper()
	p = newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	var err error
	if u1, err = p.buyer.Pay(ctx, p.id, "c1", 1000); err != nil {
		t.Fatal(err)
	}
	if u2, err = p.buyer.Pay(ctx, p.id, "c2", 2000); err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u2.Encode()); !errors.Is(err, ErrContractAmount) {
		t.Fatalf("update 2 before update 1, not waiting: %v, want ErrContractAmount", err)
	}
	return p, u1, u2
}

// TestAcceptUpdateInOrder: updates of two contracts on one channel that
// arrive out of order (update 2 first) are refused by AcceptUpdate but
// both accepted by AcceptUpdateInOrder, which holds update 2 until update
// 1 is in; an update for a channel not yet accepted waits for its open.
func TestAcceptUpdateInOrder(t *testing.T) {
	p, u1, u2 := outOfOrder(t)
	ctx := context.Background()
	if _, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c1", u2.Encode()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("update sent for another contract: %v, want ErrMalformed", err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c2", u2.Encode())
		res <- err
	}()
	waiting(t, p.seller)
	if _, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c1", u1.Encode()); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("update 2 after its turn: %v", err)
	}
	if c, _ := p.seller.Channel(p.id); c.Paid != 3000 || c.Seq != 2 {
		t.Fatalf("seller holds paid %d seq %d, want 3000 / 2", c.Paid, c.Seq)
	}

	// An update that arrives before its channel's open.
	terms, _ := p.seller.SellerTerms()
	c, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 100_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	p.chain.Mine(1)
	if err := p.buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := p.buyer.Pay(ctx, c.ID, "c3", 500)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c3", u.Encode())
		res <- err
	}()
	waiting(t, p.seller)
	if _, err := p.seller.AcceptOpen(ctx, "b", req.Encode()); err != nil {
		t.Fatal(err)
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("update before open: %v", err)
	}
	// A channel that never comes: refused once the caller gives up.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	ghost := *u
	ghost.ChannelID = wire.OutPoint{Index: 77}
	if _, err := p.seller.AcceptUpdateInOrder(cctx, "b", "c3", ghost.Encode()); !errors.Is(err, ErrUnknownChannel) {
		t.Fatalf("update for no channel: %v, want ErrUnknownChannel", err)
	}
}

func FuzzDecodeSellerTerms(f *testing.F) {
	key := mustKey(f).PubKey().SerializeCompressed()
	f.Add(SellerTerms{Key: key, PayoutScript: append([]byte{0, 20}, make([]byte, 20)...)}.Encode())
	f.Add([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		terms, err := DecodeSellerTerms(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(terms.Encode(), p) {
			t.Fatalf("decode/encode not canonical: %x", p)
		}
	})
}

// TestAcceptUpdateAfterLostUpdate: an update the buyer signed never
// arrives (its stream ended as it paid). The next one, for another
// contract, is accepted once its turn has been waited for: the channel
// moves by more than its contract, and the surplus is kept unattributed
// rather than every later payment on the channel refused. AcceptUpdate,
// which does not wait, still refuses it; the lost update, arriving late,
// is stale.
func TestAcceptUpdateAfterLostUpdate(t *testing.T) {
	p, lost, u2 := outOfOrder(t)
	ctx := context.Background()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.seller.AcceptUpdateInOrder(short, "b", "c2", u2.Encode()); err != nil {
		t.Fatalf("after waiting its turn: %v", err)
	}
	c, _ := p.seller.Channel(p.id)
	if c.Paid != 3000 || c.Seq != 2 || c.Contracts["c2"] != 2000 || c.Unattributed != 1000 {
		t.Fatalf("seller holds paid %d seq %d c2 %d unattributed %d, want 3000 / 2 / 2000 / 1000", c.Paid, c.Seq, c.Contracts["c2"], c.Unattributed)
	}
	if _, err := p.seller.AcceptUpdateInOrder(ctx, "b", "c1", lost.Encode()); !errors.Is(err, ErrStale) {
		t.Fatalf("the lost update, late: %v, want ErrStale", err)
	}
	// A contract claiming more than the channel moves is still refused.
	u3, err := p.buyer.Pay(ctx, p.id, "c2", 500)
	if err != nil {
		t.Fatal(err)
	}
	u3.ContractAmount += 100
	u3.Seq++
	if _, err := p.seller.AcceptUpdateInOrder(short, "b", "c2", u3.Encode()); !errors.Is(err, ErrContractAmount) {
		t.Fatalf("contract beyond the channel: %v, want ErrContractAmount", err)
	}
}
