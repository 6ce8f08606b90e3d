package evidence_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/evidence"
	"github.com/blackbox-market/blackbox/pkg/evidence/evidencetest"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
	"github.com/blackbox-market/blackbox/pkg/reputation"
)

func newFixture(t testing.TB) *evidencetest.Fixture { return evidencetest.New(t) }

// forBuyer is the decoded evidence the buyer builds for contract id.
func forBuyer(t testing.TB, f *evidencetest.Fixture, id string) *evidence.Evidence {
	t.Helper()
	raw, _, err := evidence.ForBuyer(f.Pay, f.Machine, id)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := evidence.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestVerifier(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id := f.Contract(t, f.Terms, 5000)
	other := f.Contract(t, f.Terms, 700) // same channel, paid later
	good := forBuyer(t, f, id)
	v := &evidence.Verifier{Chain: f.Chain}

	pc, err := v.VerifyContract(ctx, id, good.Encode())
	if err != nil {
		t.Fatalf("good evidence: %v", err)
	}
	if pc.Buyer != f.Buyer || pc.Seller != f.Seller || pc.PaidSats != 5000 {
		t.Fatalf("good evidence: %+v", pc)
	}

	mutate := func(fn func(e *evidence.Evidence)) []byte {
		e := *good
		e.Contract, e.Open, e.Update = bytes.Clone(e.Contract), bytes.Clone(e.Open), bytes.Clone(e.Update)
		fn(&e)
		return e.Encode()
	}
	update := func(fn func(u *payment.Update)) func(e *evidence.Evidence) {
		return func(e *evidence.Evidence) {
			u, err := payment.DecodeUpdate(e.Update)
			if err != nil {
				t.Fatal(err)
			}
			fn(u)
			e.Update = u.Encode()
		}
	}
	// of swaps in the contract and update of contract cid.
	of := func(cid string) func(e *evidence.Evidence) {
		return func(e *evidence.Evidence) {
			r, err := f.Machine.Get(contract.RoleBuyer, cid)
			if err != nil {
				t.Fatal(err)
			}
			e.Contract = r.Contract
			e.Update = f.Latest(t, cid).Encode()
		}
	}
	unpaidID := f.Contract(t, f.Terms, 0)
	otherKey := payment.SellerTerms{Key: bytes.Repeat([]byte{3}, 33), PayoutScript: f.Terms.PayoutScript}
	wrongKeyID := f.Contract(t, otherKey, 0)
	latestOther := f.Latest(t, other)

	cases := []struct {
		name string
		id   string
		ev   []byte
		v    evidence.Verifier
		want error
	}{
		{"forged contract signature", id, mutate(func(e *evidence.Evidence) { e.Contract[len(e.Contract)-1] ^= 1 }), *v, reputation.ErrUnverifiable},
		{"evidence of another contract", other, good.Encode(), *v, reputation.ErrUnverifiable},
		{"update for another contract", id, mutate(func(e *evidence.Evidence) { e.Update = latestOther.Encode() }), *v, reputation.ErrUnverifiable},
		{"relabelled update", id, mutate(update(func(u *payment.Update) { u.ContractID = other })), *v, reputation.ErrUnverifiable},
		{"bad signature", id, mutate(update(func(u *payment.Update) { u.Sig[len(u.Sig)-2] ^= 1 })), *v, reputation.ErrUnverifiable},
		{"inflated amount", id, mutate(update(func(u *payment.Update) { u.Amount += 1000; u.ContractAmount += 1000 })), *v, reputation.ErrUnverifiable},
		{"claims more than the channel paid", id, mutate(update(func(u *payment.Update) { u.ContractAmount = u.Amount + 1 })), *v, reputation.ErrUnverifiable},
		{"channel of garbage", id, mutate(func(e *evidence.Evidence) { e.Open = []byte{1, 2, 3} }), *v, reputation.ErrUnverifiable},
		{"funding not on chain", id, good.Encode(), evidence.Verifier{Chain: paytest.NewChain()}, reputation.ErrUnpaid},
		{"no chain", id, good.Encode(), evidence.Verifier{}, reputation.ErrUnverifiable},
		{"truncated", id, good.Encode()[:100], *v, reputation.ErrUnverifiable},
		{"trailing bytes", id, append(good.Encode(), 0), *v, reputation.ErrUnverifiable},
		{"channel not to the accepted payment key", wrongKeyID, mutate(of(wrongKeyID)), *v, reputation.ErrUnverifiable},
		{"unpaid contract", unpaidID, mutate(of(unpaidID)), *v, reputation.ErrUnpaid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pc, err := c.v.VerifyContract(ctx, c.id, c.ev)
			t.Log(err)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %+v, %v; want %v", pc, err, c.want)
			}
			if c.want == reputation.ErrUnpaid && errors.Is(err, reputation.ErrUnverifiable) {
				t.Fatalf("unpaid evidence also unverifiable: %v", err)
			}
		})
	}
}

// TestForBuyer: the buyer has evidence only for a contract it accepted and
// paid, and says why otherwise.
func TestForBuyer(t *testing.T) {
	f := newFixture(t)
	paid := f.Contract(t, f.Terms, 1234)
	raw, amount, err := evidence.ForBuyer(f.Pay, f.Machine, paid)
	if err != nil || amount != 1234 {
		t.Fatalf("paid contract: %d, %v", amount, err)
	}
	ev, err := evidence.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.Machine.Get(contract.RoleBuyer, paid)
	if !bytes.Equal(ev.Contract, r.Contract) || !bytes.Equal(ev.Update, f.Latest(t, paid).Encode()) {
		t.Fatal("evidence does not carry the contract and its latest update")
	}

	unpaid := f.Contract(t, f.Terms, 0)
	if _, _, err := evidence.ForBuyer(f.Pay, f.Machine, unpaid); !errors.Is(err, evidence.ErrNoEvidence) {
		t.Fatalf("unpaid contract: %v", err)
	}
	if _, _, err := evidence.ForBuyer(f.Pay, f.Machine, "nosuchcontract"); !errors.Is(err, contract.ErrNotFound) {
		t.Fatalf("unknown contract: %v", err)
	}
	// A proposal the seller never accepted has no contract to show.
	rec, _ := f.Machine.Get(contract.RoleBuyer, paid)
	rec.ID, rec.Contract, rec.History = "proposed-only", nil, nil
	rec.State = contract.StateProposed
	if err := f.Machine.Create(rec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := evidence.ForBuyer(f.Pay, f.Machine, "proposed-only"); !errors.Is(err, evidence.ErrNoEvidence) {
		t.Fatalf("unaccepted contract: %v", err)
	}
}

func TestDecode(t *testing.T) {
	good := (&evidence.Evidence{Contract: []byte("contract"), Open: []byte("open"), Update: []byte("update")}).Encode()
	e, err := evidence.Decode(good)
	if err != nil || string(e.Contract) != "contract" || string(e.Open) != "open" || string(e.Update) != "update" {
		t.Fatalf("round trip: %+v, %v", e, err)
	}
	field := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	cases := map[string][]byte{
		"empty":                 nil,
		"unknown version":       append([]byte{2}, good[1:]...),
		"truncated":             good[:len(good)-1],
		"trailing":              append(bytes.Clone(good), 0),
		"no update":             good[:1+1+8+1+4],
		"non-minimal length":    append([]byte{evidence.Version, 0x80, 0x00}, good[1:]...),
		"length past the end":   append([]byte{evidence.Version}, field(1<<40)...),
		"contract over its cap": append(append([]byte{evidence.Version}, field(contract.MaxContractSize+1)...), make([]byte, contract.MaxContractSize+1)...),
		"update over its cap":   append(append(bytes.Clone(good[:1+1+8+1+4]), field(payment.MaxUpdateSize+1)...), make([]byte, payment.MaxUpdateSize+1)...),
		"over the total cap":    make([]byte, evidence.MaxSize+1),
	}
	for name, b := range cases {
		if b != nil && name != "over the total cap" && name != "unknown version" {
			b[0] = evidence.Version
		}
		if e, err := evidence.Decode(b); err == nil {
			t.Errorf("%s: decoded %+v", name, e)
		}
	}
}

// FuzzDecode: peer bytes never crash the decoder, and what it accepts is
// exactly what Encode writes for the decoded fields.
func FuzzDecode(f *testing.F) {
	f.Add((&evidence.Evidence{Contract: []byte("c"), Open: []byte("o"), Update: []byte("u")}).Encode())
	f.Add((&evidence.Evidence{}).Encode())
	f.Add([]byte{evidence.Version, 0x80, 0x00, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := evidence.Decode(b)
		if err != nil {
			return
		}
		if got := e.Encode(); !bytes.Equal(got, b) {
			t.Fatalf("decoded %x, re-encoded %x", b, got)
		}
	})
}

// FuzzVerifyContract: whatever the evidence, the verifier answers verified
// (for the fixture's parties, at most what was paid), unverifiable or
// unpaid, and never anything else.
func FuzzVerifyContract(f *testing.F) {
	fx := newFixture(f)
	id := fx.Contract(f, fx.Terms, 5000)
	good, _, err := evidence.ForBuyer(fx.Pay, fx.Machine, id)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{evidence.Version, 0, 0, 0})
	v := &evidence.Verifier{Chain: fx.Chain}
	f.Fuzz(func(t *testing.T, b []byte) {
		pc, err := v.VerifyContract(context.Background(), id, b)
		switch {
		case err == nil:
			if pc.Buyer != fx.Buyer || pc.Seller != fx.Seller || pc.PaidSats == 0 || pc.PaidSats > 5000 {
				t.Fatalf("verified %+v", pc)
			}
		case !errors.Is(err, reputation.ErrUnverifiable) && !errors.Is(err, reputation.ErrUnpaid):
			t.Fatalf("untyped failure: %v", err)
		}
	})
}

// TestAttestationsCountOnlyWhenPaid: a node that trusts the buyer moves its
// score of the seller for an attestation whose evidence shows a signed,
// paid contract, and not for forged or unpaid ones.
func TestAttestationsCountOnlyWhenPaid(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	_, self := evidencetest.Identity(t)
	book, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig(), Self: self,
		Evidence: &evidence.Verifier{Chain: f.Chain}})
	if err != nil {
		t.Fatal(err)
	}
	if err := book.SetTrust(f.Buyer, 1); err != nil {
		t.Fatal(err)
	}
	attest := func(id string, ev []byte) error {
		a := book.NewAttestation(f.Buyer, reputation.Observation{Peer: f.Seller, ContractID: id,
			Outcome: reputation.OutcomeCompleted}, 5000, ev)
		sealed, err := reputation.SealAttestation(a, f.BuyerKey)
		if err != nil {
			t.Fatal(err)
		}
		return book.AddRecord(ctx, f.Buyer, sealed)
	}
	before := book.Score(f.Seller)

	id := f.Contract(t, f.Terms, 5000)
	good := forBuyer(t, f, id)
	forged := *good
	forged.Contract = bytes.Clone(good.Contract)
	forged.Contract[len(forged.Contract)-1] ^= 1
	if err := attest(id, forged.Encode()); !errors.Is(err, reputation.ErrRejected) {
		t.Fatalf("forged evidence: %v", err)
	}
	unpaid := f.Contract(t, f.Terms, 0)
	r, _ := f.Machine.Get(contract.RoleBuyer, unpaid)
	up := evidence.Evidence{Contract: r.Contract, Open: good.Open, Update: f.Latest(t, unpaid).Encode()}
	if err := attest(unpaid, up.Encode()); !errors.Is(err, reputation.ErrRejected) {
		t.Fatalf("unpaid evidence: %v", err)
	}
	if s := book.Score(f.Seller); s.Evidence != before.Evidence || s.Mean != before.Mean {
		t.Fatalf("rejected attestations moved the score: %+v → %+v", before, s)
	}
	rej := book.Rejections()
	if rej[reputation.ReasonUnverifiable] != 1 || rej[reputation.ReasonUnpaid] != 1 {
		t.Fatalf("rejections %v", rej)
	}

	if err := attest(id, good.Encode()); err != nil {
		t.Fatalf("paid contract: %v", err)
	}
	after := book.Score(f.Seller)
	if after.Evidence <= before.Evidence || after.Mean <= before.Mean {
		t.Fatalf("paid attestation did not move the score: %+v → %+v", before, after)
	}
}
