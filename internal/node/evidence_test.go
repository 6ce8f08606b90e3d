package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// evFixture is a buyer that contracted with a seller and paid on a real
// channel (real keys, scripts and signatures) on an in-memory chain.
type evFixture struct {
	chain         *paytest.Chain
	pay           *payment.Manager
	terms         payment.SellerTerms
	bkey, skey    crypto.PrivKey
	buyer, seller peer.ID
	chanID        string
	machine       *contract.Machine
}

func newIdentity(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func newEvFixture(t *testing.T) *evFixture {
	t.Helper()
	ctx := context.Background()
	params := &chaincfg.RegressionNetParams
	payout, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payout.PubKey().SerializeCompressed()), params)
	cfg := payment.DefaultConfig()
	cfg.PayoutAddress = addr.EncodeAddress()
	cfg.Confirmations = 1
	f := &evFixture{chain: paytest.NewChain()}
	mgr := func(seed byte, fund payment.Funder) *payment.Manager {
		keys, err := payment.NewKeyring(bytes.Repeat([]byte{seed}, 32), params)
		if err != nil {
			t.Fatal(err)
		}
		m, err := payment.NewManager(payment.ManagerConfig{Config: cfg, Chain: f.chain, Store: payment.NewMemStore(), Keys: keys, Funder: fund})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	f.pay = mgr(1, paytest.NewFunder(f.chain))
	if f.terms, err = mgr(2, nil).SellerTerms(); err != nil {
		t.Fatal(err)
	}
	f.bkey, f.buyer = newIdentity(t)
	f.skey, f.seller = newIdentity(t)
	ch, _, err := f.pay.OpenChannel(ctx, payment.OpenParams{Peer: f.seller.String(), Seller: f.terms, Capacity: 1_000_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	f.chain.Mine(1)
	if err := f.pay.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f.chanID = ch.ID
	f.machine = contract.NewMachine(contract.NewMemStore(), contract.Timeouts{}, nil, nil)
	return f
}

// contract signs a contract between the fixture's buyer and seller whose
// acceptance names terms, records it as the buyer's and pays paid sats for
// it on the channel (none when paid is 0).
func (f *evFixture) contract(t *testing.T, terms payment.SellerTerms, paid int64) string {
	t.Helper()
	now := time.Now()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	p := &contract.Proposal{
		Version: contract.Version, Buyer: f.buyer, Seller: f.seller, OfferSeq: 1,
		Request: contract.Request{Image: "docker.io/library/alpine:3", Command: []string{"true"},
			Duration: time.Minute},
		Interval: time.Minute, Price: 5_000_000, PaymentKey: bytes.Repeat([]byte{2}, 33),
		Nonce: nonce, Issued: now, Expiry: now.Add(time.Minute),
	}
	p.Request.Resources.CPUMillis, p.Request.Resources.MemoryBytes = 1000, 1<<28
	penv, err := contract.SignProposal(p, f.bkey)
	if err != nil {
		t.Fatal(err)
	}
	d := &contract.Decision{
		Version: contract.Version, ProposalID: p.ID(), Seller: f.seller, Buyer: f.buyer, Verdict: contract.Accept,
		PaymentTerms: encodeTerms(terms), FundBy: now.Add(time.Minute), Issued: now, Expiry: now.Add(time.Minute),
	}
	denv, err := contract.SignDecision(d, f.skey)
	if err != nil {
		t.Fatal(err)
	}
	ct := (&contract.Contract{ProposalEnv: penv, AcceptanceEnv: denv}).Marshal()
	if err := f.machine.Create(&contract.Record{ID: p.ID(), Role: contract.RoleBuyer, Peer: f.seller,
		State: contract.StateAccepted, Contract: ct, Proposal: p}); err != nil {
		t.Fatal(err)
	}
	if paid > 0 {
		if _, err := f.pay.Pay(context.Background(), f.chanID, p.ID(), paid); err != nil {
			t.Fatal(err)
		}
	}
	return p.ID()
}

func (f *evFixture) evidence(t *testing.T, id string) *paymentEvidence {
	t.Helper()
	raw, _, err := buyerEvidence(f.pay, f.machine, id)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := decodeEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestEvidenceVerifier(t *testing.T) {
	ctx := context.Background()
	f := newEvFixture(t)
	id := f.contract(t, f.terms, 5000)
	other := f.contract(t, f.terms, 700) // same channel, paid later
	good := f.evidence(t, id)
	v := &evidenceVerifier{chain: f.chain}

	pc, err := v.VerifyContract(ctx, id, good.encode())
	if err != nil {
		t.Fatalf("good evidence: %v", err)
	}
	if pc.Buyer != f.buyer || pc.Seller != f.seller || pc.PaidSats != 5000 {
		t.Fatalf("good evidence: %+v", pc)
	}

	mutate := func(fn func(e *paymentEvidence)) []byte {
		e := *good
		e.Contract, e.Open, e.Update = bytes.Clone(e.Contract), bytes.Clone(e.Open), bytes.Clone(e.Update)
		fn(&e)
		return e.encode()
	}
	update := func(fn func(u *payment.Update)) func(e *paymentEvidence) {
		return func(e *paymentEvidence) {
			u, err := payment.DecodeUpdate(e.Update)
			if err != nil {
				t.Fatal(err)
			}
			fn(u)
			e.Update = u.Encode()
		}
	}
	unpaidID := f.contract(t, f.terms, 0)
	otherKey := payment.SellerTerms{Key: bytes.Repeat([]byte{3}, 33), PayoutScript: f.terms.PayoutScript}
	wrongKeyID := f.contract(t, otherKey, 0)
	latestOther, err := f.pay.LatestUpdate(f.chanID, other)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		id    string
		ev    []byte
		chain payment.Chain
		want  error
	}{
		{"forged contract signature", id, mutate(func(e *paymentEvidence) { e.Contract[len(e.Contract)-1] ^= 1 }), f.chain, reputation.ErrUnverifiable},
		{"evidence of another contract", other, good.encode(), f.chain, reputation.ErrUnverifiable},
		{"update for another contract", id, mutate(func(e *paymentEvidence) { e.Update = latestOther.Encode() }), f.chain, reputation.ErrUnverifiable},
		{"relabelled update", id, mutate(update(func(u *payment.Update) { u.ContractID = other })), f.chain, reputation.ErrUnverifiable},
		{"bad signature", id, mutate(update(func(u *payment.Update) { u.Sig[len(u.Sig)-2] ^= 1 })), f.chain, reputation.ErrUnverifiable},
		{"inflated amount", id, mutate(update(func(u *payment.Update) { u.Amount += 1000; u.ContractAmount += 1000 })), f.chain, reputation.ErrUnverifiable},
		{"claims more than the channel paid", id, mutate(update(func(u *payment.Update) { u.ContractAmount = u.Amount + 1 })), f.chain, reputation.ErrUnverifiable},
		{"funding not on chain", id, good.encode(), paytest.NewChain(), reputation.ErrUnpaid},
		{"no chain", id, good.encode(), nil, reputation.ErrUnverifiable},
		{"truncated", id, good.encode()[:100], f.chain, reputation.ErrUnverifiable},
		{"trailing bytes", id, append(good.encode(), 0), f.chain, reputation.ErrUnverifiable},
		{"channel not to the accepted payment key", wrongKeyID, mutate(func(e *paymentEvidence) {
			r, _ := f.machine.Get(contract.RoleBuyer, wrongKeyID)
			e.Contract = r.Contract
			e.Update = mustUpdate(t, f, wrongKeyID).Encode()
		}), f.chain, reputation.ErrUnverifiable},
		{"unpaid contract", unpaidID, mutate(func(e *paymentEvidence) {
			r, _ := f.machine.Get(contract.RoleBuyer, unpaidID)
			e.Contract = r.Contract
			e.Update = mustUpdate(t, f, unpaidID).Encode()
		}), f.chain, reputation.ErrUnpaid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := &evidenceVerifier{chain: c.chain}
			pc, err := v.VerifyContract(ctx, c.id, c.ev)
			t.Log(err)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %+v, %v; want %v", pc, err, c.want)
			}
			if c.want == reputation.ErrUnpaid && errors.Is(err, reputation.ErrUnverifiable) {
				t.Fatalf("unpaid evidence also unverifiable: %v", err)
			}
		})
	}

	// A contract never paid has no evidence to give.
	if _, _, err := buyerEvidence(f.pay, f.machine, unpaidID); !errors.Is(err, errNoEvidence) {
		t.Fatalf("unpaid contract: %v", err)
	}
}

func mustUpdate(t *testing.T, f *evFixture, id string) *payment.Update {
	t.Helper()
	u, err := f.pay.LatestUpdate(f.chanID, id)
	if err != nil || u == nil {
		t.Fatalf("latest update: %v", err)
	}
	return u
}

// TestAttestationsCountOnlyWhenPaid: a third node that trusts the buyer
// moves its score of the seller for an attestation whose evidence shows a
// signed, paid contract, and not for forged or unpaid ones.
func TestAttestationsCountOnlyWhenPaid(t *testing.T) {
	ctx := context.Background()
	f := newEvFixture(t)
	_, self := newIdentity(t)
	book, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig(), Self: self,
		Evidence: &evidenceVerifier{chain: f.chain}})
	if err != nil {
		t.Fatal(err)
	}
	if err := book.SetTrust(f.buyer, 1); err != nil {
		t.Fatal(err)
	}
	attest := func(id string, ev []byte) error {
		a := book.NewAttestation(f.buyer, reputation.Observation{Peer: f.seller, ContractID: id,
			Outcome: reputation.OutcomeCompleted}, 5000, ev)
		sealed, err := reputation.SealAttestation(a, f.bkey)
		if err != nil {
			t.Fatal(err)
		}
		return book.AddRecord(ctx, f.buyer, sealed)
	}
	before := book.Score(f.seller)

	id := f.contract(t, f.terms, 5000)
	good := f.evidence(t, id)
	forged := *good
	forged.Contract = bytes.Clone(good.Contract)
	forged.Contract[len(forged.Contract)-1] ^= 1
	if err := attest(id, forged.encode()); !errors.Is(err, reputation.ErrRejected) {
		t.Fatalf("forged evidence: %v", err)
	}
	unpaid := f.contract(t, f.terms, 0)
	r, _ := f.machine.Get(contract.RoleBuyer, unpaid)
	up := paymentEvidence{Contract: r.Contract, Open: good.Open, Update: mustUpdate(t, f, unpaid).Encode()}
	if err := attest(unpaid, up.encode()); !errors.Is(err, reputation.ErrRejected) {
		t.Fatalf("unpaid evidence: %v", err)
	}
	if s := book.Score(f.seller); s.Evidence != before.Evidence || s.Mean != before.Mean {
		t.Fatalf("rejected attestations moved the score: %+v → %+v", before, s)
	}
	rej := book.Rejections()
	if rej[reputation.ReasonUnverifiable] != 1 || rej[reputation.ReasonUnpaid] != 1 {
		t.Fatalf("rejections %v", rej)
	}

	if err := attest(id, good.encode()); err != nil {
		t.Fatalf("paid contract: %v", err)
	}
	after := book.Score(f.seller)
	if after.Evidence <= before.Evidence || after.Mean <= before.Mean {
		t.Fatalf("paid attestation did not move the score: %+v → %+v", before, after)
	}
}

// TestAttesterKeepsAndPushesPaidContracts: when a bought contract ends, the
// node's attester builds the evidence from its contract store and channels,
// seals the attestation with the node key, keeps it (accepted by its own
// verifier) and pushes it to the connected peer it trusts, whose score of
// the seller moves; a contract without a payment yields no attestation.
func TestAttesterKeepsAndPushesPaidContracts(t *testing.T) {
	f := newEvFixture(t)
	db, err := store.Open(filepath.Join(t.TempDir(), DBFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	hb, err := mn.AddPeer(f.bkey, ma.StringCast("/ip4/10.0.0.1/tcp/4001"))
	if err != nil {
		t.Fatal(err)
	}
	hr, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	newBook := func(self peer.ID) *reputation.Book {
		b, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig(), Self: self,
			Evidence: &evidenceVerifier{chain: f.chain}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	book, remote := newBook(f.buyer), newBook(hr.ID())
	reputation.NewExchange(hr, remote, nil)
	if err := remote.SetTrust(f.buyer, 1); err != nil {
		t.Fatal(err)
	}
	if err := book.SetTrust(hr.ID(), 1); err != nil {
		t.Fatal(err)
	}
	n := &Node{key: f.bkey, db: db, host: hb, payments: f.pay, book: book, log: slog.New(slog.DiscardHandler)}
	n.exchange = reputation.NewExchange(hb, book, nil)
	f.machine = contract.NewMachine(store.NewContractStore(db), contract.Timeouts{}, nil, nil)
	paid := f.contract(t, f.terms, 4000)
	unpaid := f.contract(t, f.terms, 0)

	a := newAttester(n, f.buyer)
	rank := bookRanking{b: book, a: a}
	rank.Outcome(f.seller, paid, contract.FaultNone)
	rank.Outcome(f.seller, unpaid, contract.FaultSellerGone)
	// Issued in the background: wait for the push to land, then stop
	// (close cancels what is still in flight).
	for deadline := time.Now().Add(10 * time.Second); remote.Accepted() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	a.close()
	if got := book.Accepted(); got != 1 {
		t.Fatalf("kept %d attestations, want 1 (rejections %v)", got, book.Rejections())
	}
	// The buyer's own attestation does not count twice in its own view.
	if s := book.Score(f.seller); len(s.Sources) != 1 || s.Sources[0].From != reputation.Self {
		t.Fatalf("sources %+v", s.Sources)
	}
	if got := remote.Accepted(); got != 1 {
		t.Fatalf("trusted peer accepted %d attestations, want 1 (rejections %v)", got, remote.Rejections())
	}
	if s := remote.Score(f.seller); s.Evidence <= 0 || len(s.Sources) != 1 || s.Sources[0].From != f.buyer {
		t.Fatalf("trusted peer's score of the seller: %+v", s)
	}
}
