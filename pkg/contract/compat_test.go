package contract

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/wire"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"
)

// futureFields is what a newer version might add after a message's known
// fields: a varint, a fixed32, a fixed64 and a bytes field numbered from
// first, in number order as our encoders write.
func futureFields(first protowire.Number) wire.RawFields {
	b := protowire.AppendTag(nil, first, protowire.VarintType)
	b = protowire.AppendVarint(b, 300)
	b = protowire.AppendTag(b, first+1, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, first+2, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 8)
	b = protowire.AppendTag(b, first+10, protowire.BytesType)
	b = protowire.AppendString(b, "future-feature")
	return wire.RawFields(b)
}

func criticalField() wire.RawFields {
	b := protowire.AppendTag(nil, wire.CriticalMin+6, protowire.BytesType)
	return wire.RawFields(protowire.AppendString(b, "must-understand"))
}

// rawRecord signs payload bytes as they are, under a real record's domain
// and codec: what a newer version's encoder would have written.
type rawRecord struct {
	record.Record
	payload []byte
}

func (r rawRecord) MarshalRecord() ([]byte, error) { return r.payload, nil }

// TestFutureRecords: proposals (with their request, inputs and service),
// decisions and receipts of a newer version, carrying fields this version
// does not know, are read and verified (the signature covers the unknown
// fields as received), the proposal's ID is the one its buyer computed, and
// changing a byte of an unknown field breaks the signature. A critical
// unknown field is refused as unsupported; malformed known fields are still
// refused.
func TestFutureRecords(t *testing.T) {
	bk, buyer := newKey(t)
	sk, seller := newKey(t)
	p := testProposal(buyer, seller)
	p.Request.Service = &Service{Port: 8080, Unknown: futureFields(3)}
	p.Request.Inputs[0].Unknown = futureFields(4)
	p.Request.Unknown = futureFields(19)
	p.Unknown = futureFields(14)
	env, err := SignProposal(p, bk)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := p.MarshalRecord()
	sum := sha256.Sum256(payload)
	got, err := OpenProposal(env, t0)
	if err != nil {
		t.Fatalf("a newer buyer's proposal: %v", err)
	}
	if got.ID() != hex.EncodeToString(sum[:]) || got.ID() != p.ID() {
		t.Fatalf("contract ID %s here, %s at the buyer", got.ID(), p.ID())
	}
	if got.Request.Unknown != p.Request.Unknown || got.Request.Service.Port != 8080 || got.Request.Inputs[0].Name != "in.txt" || got.Price != p.Price {
		t.Fatalf("decoded %+v", got)
	}
	i := bytes.Index(env, []byte("future-feature"))
	tampered := bytes.Clone(env)
	tampered[i] ^= 1
	if _, err := OpenProposal(tampered, t0); err == nil {
		t.Fatal("a changed unknown field still verified")
	}

	crit := testProposal(buyer, seller)
	crit.Request.Unknown = criticalField()
	cenv, _ := SignProposal(crit, bk)
	if _, err := OpenProposal(cenv, t0); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "field 1030") {
		t.Fatalf("a critical field: %v", err)
	}

	// A known field malformed among unknown ones is still malformed.
	bad := testProposal(buyer, seller)
	bad.Unknown = futureFields(14)
	bad.Nonce = []byte{1}
	benv, _ := SignProposal(bad, bk)
	if _, err := OpenProposal(benv, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short nonce: %v", err)
	}

	// A newer seller's decision and receipt.
	d := &Decision{Version: Version, ProposalID: p.ID(), Seller: seller, Buyer: buyer, Verdict: Reject,
		Reason: "some_new_reason", Message: "m", Issued: t0, Expiry: t0.Add(time.Minute)}
	db, _ := d.MarshalRecord()
	denv, err := record.Seal(rawRecord{d, append(db, futureFields(16)...)}, sk)
	if err != nil {
		t.Fatal(err)
	}
	dwire, _ := denv.Marshal()
	gd, err := OpenDecision(dwire, t0)
	if err != nil || gd.Reason != "some_new_reason" || gd.ProposalID != p.ID() {
		t.Fatalf("a newer seller's decision: %+v %v", gd, err)
	}
	r := &Receipt{Version: Version, ContractID: p.ID(), Seller: seller, Buyer: buyer, Billed: 5,
		Outputs: []Output{{Name: "o", SHA256: p.Request.Inputs[0].SHA256}}, Issued: t0, Expiry: t0.Add(time.Hour)}
	rb, _ := r.MarshalRecord()
	renv, _ := record.Seal(rawRecord{r, append(rb, futureFields(18)...)}, sk)
	rwire, _ := renv.Marshal()
	if gr, err := OpenReceipt(rwire, t0); err != nil || gr.Billed != 5 || len(gr.Outputs) != 1 {
		t.Fatalf("a newer seller's receipt: %+v %v", gr, err)
	}
	renv, _ = record.Seal(rawRecord{r, append(rb, criticalField()...)}, sk)
	rwire, _ = renv.Marshal()
	if _, err := OpenReceipt(rwire, t0); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a receipt with a critical field: %v", err)
	}
}

// TestFutureProposalDecided: this version's seller accepts a newer
// buyer's proposal, answering with the buyer's proposal ID, and rejects
// one with a critical field with reason unsupported, naming the field.
func TestFutureProposalDecided(t *testing.T) {
	m := newMarket(t)
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, offer.Resources{CPUMillis: 2000, MemoryBytes: 2 << 30}, 3_600_000_000)
	bh := m.host()
	m.connect()
	bkey := bh.Peerstore().PrivKey(bh.ID())
	mk := func(unknown wire.RawFields) (*Proposal, []byte) {
		req := m.request(5)
		req.Unknown = unknown
		tm := TermsFor(m.offers[0], &req)
		now := time.Now()
		p := &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), OfferSeq: 1, Request: req,
			Interval: tm.Interval, Price: tm.Price, StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33),
			Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute), Unknown: futureFields(14)}
		env, err := SignProposal(p, bkey)
		if err != nil {
			t.Fatal(err)
		}
		return p, env
	}
	for _, tc := range []struct {
		name    string
		unknown wire.RawFields
		verdict Verdict
		reason  Reason
		msg     string
	}{
		{"newer, ignorable", futureFields(19), Accept, ReasonNone, ""},
		{"newer, critical", criticalField(), Reject, ReasonUnsupported, "unsupported: "},
	} {
		p, env := mk(tc.unknown)
		denv, err := s.Decide(context.Background(), bh.ID(), env)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenDecision(denv, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if d.Verdict != tc.verdict || d.Reason != tc.reason || !strings.Contains(d.Message, tc.msg) {
			t.Fatalf("%s: %s %q (%s)", tc.name, d.Verdict, d.Reason, d.Message)
		}
		if tc.verdict == Accept {
			if d.ProposalID != p.ID() {
				t.Fatalf("accepted proposal %s, the buyer's is %s", d.ProposalID, p.ID())
			}
			rec, err := s.Machine().Get(RoleSeller, p.ID())
			if err != nil {
				t.Fatal(err)
			}
			c, err := OpenContract(rec.Contract)
			if err != nil || c.ID != p.ID() || c.Proposal.Request.Unknown != tc.unknown {
				t.Fatalf("stored contract: %v %+v", err, c)
			}
		} else if !strings.Contains(d.Message, "field 1030") {
			t.Fatalf("the refusal does not name the field: %s", d.Message)
		}
	}
}

// TestFutureBuyerJobRuns: a whole job whose request carries a newer
// version's fields runs and settles against this version's seller.
func TestFutureBuyerJobRuns(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: testInterval}
	pay := &fakePay{}
	s, _ := m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(4)
	req.Unknown = futureFields(19)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Receipt == nil {
		t.Fatalf("job %+v", j)
	}
	sr, err := s.Machine().Get(RoleSeller, j.ContractID)
	if err != nil || sr.State != StateSettled || sr.Proposal.Request.Unknown != req.Unknown {
		t.Fatalf("seller's record: %v %+v", err, sr)
	}
}

// TestOlderSellerRefusal: a seller from before the Open decoders refuses
// an unknown request field as malformed; the buyer says what it means.
func TestOlderSellerRefusal(t *testing.T) {
	for msg, want := range map[string]string{
		"decode proposal: decode request: invalid contract record: malformed: unknown field 18": "does not support services (request field 18)",
		"decode proposal: decode request: invalid contract record: malformed: unknown field 17": "does not support escrow",
		"decode proposal: invalid contract record: malformed: unknown field 13":                 "does not support proposal field 13",
	} {
		r, m, ok := olderSeller(&Decision{Reason: ReasonMalformed, Message: msg})
		if !ok || r != ReasonUnsupported || !strings.Contains(m, want) {
			t.Errorf("%q: %v %q %q", msg, ok, r, m)
		}
	}
	if _, _, ok := olderSeller(&Decision{Reason: ReasonMalformed, Message: "decode proposal: invalid contract record: malformed: field 3 repeated"}); ok {
		t.Error("another malformed refusal was taken for an older seller's")
	}
}
