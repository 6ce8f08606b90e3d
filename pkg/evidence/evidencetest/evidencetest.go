// Package evidencetest builds what contract evidence is made of, for tests:
// a buyer and a seller with libp2p identities, a buyer's payment manager
// with a real channel (real keys, scripts and signatures) funded and
// confirmed on an in-memory chain, and a contract machine holding the
// buyer's signed contracts. The evidence tests and the node's attester
// tests share it.
package evidencetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// Fixture is a buyer that opened a channel to a seller; Contract signs
// contracts between them and pays for them on that channel.
type Fixture struct {
	Chain *paytest.Chain
	// Pay is the buyer's payment manager; ChannelID its open channel.
	Pay       *payment.Manager
	ChannelID string
	// Terms are the seller's payment terms (the channel pays Terms.Key).
	Terms               payment.SellerTerms
	BuyerKey, SellerKey crypto.PrivKey
	Buyer, Seller       peer.ID
	// Machine holds the buyer's contract records; a test may replace it
	// (with one on a real store) before calling Contract.
	Machine *contract.Machine
}

// Identity returns a fresh Ed25519 libp2p identity.
func Identity(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// New opens and confirms a 1,000,000 sat channel from a buyer to a seller;
func New(t testing.TB) *Fixture {
	t.Helper()
	ctx := context.Background()
	params := &chaincfg.RegressionNetParams
	payout, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payout.PubKey().SerializeCompressed()), params)
	if err != nil {
		t.Fatal(err)
	}
	cfg := payment.RegtestConfig()
	cfg.PayoutAddress = addr.EncodeAddress()
	cfg.Confirmations = 1
	f := &Fixture{Chain: paytest.NewChain()}
	mgr := func(seed byte, fund payment.Funder) *payment.Manager {
		keys, err := payment.NewKeyring(bytes.Repeat([]byte{seed}, 32), params)
		if err != nil {
			t.Fatal(err)
		}
		m, err := payment.NewManager(payment.ManagerConfig{Config: cfg, Chain: f.Chain, Store: payment.NewMemStore(), Keys: keys, Funder: fund})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	f.Pay = mgr(1, paytest.NewFunder(f.Chain))
	if f.Terms, err = mgr(2, nil).SellerTerms(); err != nil {
		t.Fatal(err)
	}
	f.BuyerKey, f.Buyer = Identity(t)
	f.SellerKey, f.Seller = Identity(t)
	ch, _, err := f.Pay.OpenChannel(ctx, payment.OpenParams{Peer: f.Seller.String(), Seller: f.Terms, Capacity: 1_000_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	f.Chain.Mine(1)
	if err := f.Pay.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f.ChannelID = ch.ID
	f.Machine = contract.NewMachine(contract.NewMemStore(), contract.Timeouts{}, nil, nil)
	return f
}

// Contract signs a contract between the buyer and the seller whose
// acceptance names terms, records it in Machine as the buyer's, and pays
// paid sats for it on the channel (nothing when paid is 0). It returns the
// contract ID.
func (f *Fixture) Contract(t testing.TB, terms payment.SellerTerms, paid int64) string {
	t.Helper()
	now := time.Now()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	p := &contract.Proposal{
		Version: contract.Version, Buyer: f.Buyer, Seller: f.Seller, OfferSeq: 1,
		Request: contract.Request{Image: "docker.io/library/alpine:3", Command: []string{"true"},
			Duration: time.Minute},
		Interval: time.Minute, Price: 5_000_000, PaymentKey: bytes.Repeat([]byte{2}, 33),
		Nonce: nonce, Issued: now, Expiry: now.Add(time.Minute),
	}
	p.Request.Resources.CPUMillis, p.Request.Resources.MemoryBytes = 1000, 1<<28
	penv, err := contract.SignProposal(p, f.BuyerKey)
	if err != nil {
		t.Fatal(err)
	}
	d := &contract.Decision{
		Version: contract.Version, ProposalID: p.ID(), Seller: f.Seller, Buyer: f.Buyer, Verdict: contract.Accept,
		PaymentTerms: terms.Encode(), FundBy: now.Add(time.Minute), Issued: now, Expiry: now.Add(time.Minute),
	}
	denv, err := contract.SignDecision(d, f.SellerKey)
	if err != nil {
		t.Fatal(err)
	}
	ct := (&contract.Contract{ProposalEnv: penv, AcceptanceEnv: denv}).Marshal()
	if err := f.Machine.Create(&contract.Record{ID: p.ID(), Role: contract.RoleBuyer, Peer: f.Seller,
		State: contract.StateAccepted, Contract: ct, Proposal: p}); err != nil {
		t.Fatal(err)
	}
	if paid > 0 {
		if _, err := f.Pay.Pay(context.Background(), f.ChannelID, p.ID(), paid); err != nil {
			t.Fatal(err)
		}
	}
	return p.ID()
}

// Latest is the channel's latest update labelled with contract id.
func (f *Fixture) Latest(t testing.TB, id string) *payment.Update {
	t.Helper()
	u, err := f.Pay.LatestUpdate(f.ChannelID, id)
	if err != nil || u == nil {
		t.Fatalf("latest update for %s: %v, %v", id, u, err)
	}
	return u
}
