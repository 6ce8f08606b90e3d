package contract

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// escrowCase is a signed contract between buyer and seller naming an
// arbiter, the seller's receipt of it, and a dispute about it.
type escrowCase struct {
	bk, sk, ak          crypto.PrivKey
	buyer, seller, arb  peer.ID
	ct                  *Contract
	receipt, disputeEnv []byte
	offerEnv            []byte
	dispute             *Dispute
	offer               *ArbiterOffer
}

func newEscrowCase(t testing.TB) *escrowCase {
	c := &escrowCase{}
	c.bk, c.buyer = newKey(t)
	c.sk, c.seller = newKey(t)
	c.ak, c.arb = newKey(t)
	p := testProposal(c.buyer, c.seller)
	p.Request.Escrow = c.arb.String()
	penv, err := SignProposal(p, c.bk)
	if err != nil {
		t.Fatal(err)
	}
	terms := (&SellerEscrowTerms{Key: bytes.Repeat([]byte{2}, 33), KeyIndex: 4, PayoutScript: []byte{0, 20, 1, 2}, MaxDelay: 1008}).Marshal()
	d := &Decision{Version: Version, ProposalID: p.ID(), Seller: c.seller, Buyer: c.buyer, Verdict: Accept, PaymentTerms: terms,
		FundBy: t0.Add(time.Minute), Issued: t0, Expiry: t0.Add(time.Minute)}
	denv, err := SignDecision(d, c.sk)
	if err != nil {
		t.Fatal(err)
	}
	c.ct, err = OpenContract((&Contract{ProposalEnv: penv, AcceptanceEnv: denv}).Marshal())
	if err != nil {
		t.Fatal(err)
	}
	r := &Receipt{Version: Version, ContractID: c.ct.ID, Seller: c.seller, Buyer: c.buyer, Reason: "exited",
		Outputs: []Output{{Name: OutputStdout, SHA256: p.Request.Inputs[0].SHA256, Size: 3}}, Issued: t0, Expiry: t0.Add(time.Hour)}
	if c.receipt, err = SignReceipt(r, c.sk); err != nil {
		t.Fatal(err)
	}
	c.dispute = &Dispute{From: c.seller, EscrowID: "ab:0", Contract: c.ct.Marshal(), Receipt: c.receipt,
		Digests: []string{"stdout=sha256:00"}, Reason: "delivered, not released", Issued: t0, Expiry: t0.Add(time.Minute)}
	if c.disputeEnv, err = SignDispute(c.dispute, c.sk); err != nil {
		t.Fatal(err)
	}
	c.offer = &ArbiterOffer{Arbiter: c.arb, FeeSat: 1000, PayoutScript: []byte{0, 20, 3}, Key: bytes.Repeat([]byte{3}, 33), KeyIndex: 9,
		Issued: t0, Expiry: t0.Add(time.Minute), Delay: 144, MaxDelay: 1008}
	if c.offerEnv, err = SignArbiterOffer(c.offer, c.ak); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEscrowRecords: the escrow records round-trip, verify their signer
// and refuse what is not theirs; a request without an arbiter encodes as
// before (old proposal IDs hold).
func TestEscrowRecords(t *testing.T) {
	c := newEscrowCase(t)
	now := t0.Add(time.Second)
	d, err := OpenDispute(c.disputeEnv, now)
	if err != nil || d.ContractID() != c.ct.ID || d.Reason != c.dispute.Reason || len(d.Digests) != 1 {
		t.Fatalf("dispute: %+v, %v", d, err)
	}
	o, err := OpenArbiterOffer(c.offerEnv, now)
	if err != nil || o.FeeSat != 1000 || o.KeyIndex != 9 || o.Arbiter != c.arb {
		t.Fatalf("arbiter offer: %+v, %v", o, err)
	}
	if c.ct.Proposal.Request.Escrow != c.arb.String() {
		t.Fatalf("the contract lost its arbiter: %q", c.ct.Proposal.Request.Escrow)
	}
	// A request with no arbiter encodes exactly as before the field.
	p := testProposal(c.buyer, c.seller)
	b := p.Request.marshal()
	p.Request.Escrow = c.arb.String()
	if withArb := p.Request.marshal(); !bytes.HasPrefix(withArb, b) || len(withArb) == len(b) {
		t.Fatal("the arbiter field changed the encoding of the other fields")
	}
	// Someone else's dispute: signed by the buyer, naming the seller.
	other := *c.dispute
	if _, err := SignDispute(&other, c.bk); err == nil {
		t.Fatal("signed a dispute with another party's key")
	}
	// A stranger's dispute of the contract.
	sk, stranger := newKey(t)
	other.From = stranger
	env, _ := SignDispute(&other, sk)
	if _, err := OpenDispute(env, now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a stranger's dispute: %v", err)
	}
	// A receipt of another contract.
	other = *c.dispute
	r := &Receipt{Version: Version, ContractID: strings.Repeat("cd", 32), Seller: c.seller, Buyer: c.buyer, Issued: t0, Expiry: t0.Add(time.Hour)}
	var err2 error
	if other.Receipt, err2 = SignReceipt(r, c.sk); err2 != nil {
		t.Fatal(err2)
	}
	env, _ = SignDispute(&other, c.sk)
	if _, err := OpenDispute(env, now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a dispute with another contract's receipt: %v", err)
	}
	// An offer naming another arbiter than its signer.
	bad := *c.offer
	bad.Arbiter = c.seller
	if _, err := SignArbiterOffer(&bad, c.ak); err == nil {
		t.Fatal("signed an arbiter offer for another node")
	}
	if _, err := OpenArbiterOffer(c.offerEnv, t0.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("an expired arbiter offer: %v", err)
	}
	// An offer without a delay, or with one beyond MaxEscrowDelay.
	for _, d := range [][2]uint32{{0, 100}, {200, 100}, {144, MaxEscrowDelay + 1}} {
		bad := *c.offer
		bad.Delay, bad.MaxDelay = d[0], d[1]
		env, _ := SignArbiterOffer(&bad, c.ak)
		if _, err := OpenArbiterOffer(env, t0.Add(time.Second)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("an arbiter offer with delay %d..%d: %v", d[0], d[1], err)
		}
	}
	if o, err := OpenArbiterOffer(c.offerEnv, t0.Add(time.Second)); err != nil || o.Delay != 144 || o.MaxDelay != 1008 {
		t.Fatalf("arbiter offer delay: %+v, %v", o, err)
	}
	// Seller terms and notes round-trip.
	st, err := UnmarshalSellerEscrowTerms(c.ct.Acceptance.PaymentTerms)
	if err != nil || st.KeyIndex != 4 || st.MaxDelay != 1008 {
		t.Fatalf("seller terms: %+v, %v", st, err)
	}
	n := &EscrowNote{ContractID: c.ct.ID, EscrowID: "ab:1", Contract: c.ct.Marshal(), Payload: []byte{1, 2}}
	got, err := UnmarshalEscrowNote(n.Marshal())
	if err != nil || got.ContractID != n.ContractID || got.EscrowID != n.EscrowID || !bytes.Equal(got.Payload, n.Payload) {
		t.Fatalf("note: %+v, %v", got, err)
	}
}

func FuzzEscrowNote(f *testing.F) {
	c := newEscrowCase(f)
	f.Add((&EscrowNote{ContractID: c.ct.ID, EscrowID: "ab:1", Contract: c.ct.Marshal(), Payload: []byte{1}}).Marshal())
	f.Add((&EscrowNote{EscrowID: "ab:1", Payload: []byte{1}, Split: 30000}).Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := UnmarshalEscrowNote(b)
		if err != nil {
			return
		}
		again, err := UnmarshalEscrowNote(n.Marshal())
		if err != nil || again.ContractID != n.ContractID || again.EscrowID != n.EscrowID || !bytes.Equal(again.Payload, n.Payload) || again.Split != n.Split {
			t.Fatalf("a decoded note does not round-trip: %v", err)
		}
	})
}

func FuzzSellerEscrowTerms(f *testing.F) {
	c := newEscrowCase(f)
	f.Add(c.ct.Acceptance.PaymentTerms)
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := UnmarshalSellerEscrowTerms(b)
		if err != nil {
			return
		}
		if len(st.Key) != 33 || len(st.PayoutScript) == 0 {
			t.Fatalf("accepted terms %+v", st)
		}
		if again, err := UnmarshalSellerEscrowTerms(st.Marshal()); err != nil || again.MaxDelay != st.MaxDelay {
			t.Fatalf("decoded terms do not round-trip: %v", err)
		}
	})
}

func FuzzArbiterOffer(f *testing.F) {
	c := newEscrowCase(f)
	f.Add(c.offerEnv)
	b, _ := c.offer.MarshalRecord()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, err := OpenArbiterOffer(b, t0.Add(time.Second)); err == nil && (o.Arbiter == "" || len(o.Key) != 33 || o.Delay == 0 || o.MaxDelay < o.Delay || o.MaxDelay > MaxEscrowDelay) {
			t.Fatalf("accepted an invalid offer %+v", o)
		}
		var o ArbiterOffer
		if o.UnmarshalRecord(b) == nil {
			if _, err := o.MarshalRecord(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzDispute(f *testing.F) {
	c := newEscrowCase(f)
	f.Add(c.disputeEnv)
	b, _ := c.dispute.MarshalRecord()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := OpenDispute(b, t0.Add(time.Second)); err == nil && d.ContractID() == "" {
			t.Fatalf("accepted a dispute with no contract %+v", d)
		}
		var d Dispute
		if d.UnmarshalRecord(b) == nil {
			_ = d.Validate(t0.Add(time.Second))
		}
	})
}
