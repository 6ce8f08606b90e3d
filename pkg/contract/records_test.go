package contract

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

var t0 = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func testProposal(buyer, seller peer.ID) *Proposal {
	return &Proposal{
		Version:  Version,
		Buyer:    buyer,
		Seller:   seller,
		OfferSeq: 7,
		Request: Request{
			Image:     "sha256:" + strings.Repeat("ab", 32),
			ImageSize: 1 << 20,
			Command:   []string{"sh", "-c", "echo hi > /out/x", ""},
			Env:       []string{"A=1"},
			Inputs:    []Input{{Name: "in.txt", SHA256: "sha256:" + strings.Repeat("01", 32), Size: 3}},
			Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 256 << 20},
			Duration:  2 * time.Minute,
			MaxPrice:  500,
			Region:    "eu",
			Deadline:  t0.Add(time.Hour),
		},
		Interval:   time.Minute,
		Price:      2000,
		StartFee:   1000,
		PaymentKey: bytes.Repeat([]byte{2}, 33),
		Nonce:      bytes.Repeat([]byte{9}, 16),
		Issued:     t0,
		Expiry:     t0.Add(time.Minute),
	}
}

func TestProposalRoundTrip(t *testing.T) {
	bk, buyer := newKey(t)
	_, seller := newKey(t)
	p := testProposal(buyer, seller)
	env, err := SignProposal(p, bk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenProposal(env, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != p.ID() || got.Request.Command[3] != "" || got.Request.Inputs[0] != p.Request.Inputs[0] {
		t.Fatalf("round trip changed the proposal: %+v", got)
	}
	if p.Owed(0) != 1 || p.Owed(2) != 5 || p.Intervals() != 2 || p.Total() != 5 {
		t.Fatalf("owed: %d %d intervals %d", p.Owed(0), p.Owed(2), p.Intervals())
	}
}

func TestOpenProposalRefuses(t *testing.T) {
	bk, buyer := newKey(t)
	ok, _ := newKey(t)
	_, seller := newKey(t)
	sign := func(mut func(*Proposal), key crypto.PrivKey) []byte {
		p := testProposal(buyer, seller)
		mut(p)
		env, err := seal(p, key, MaxProposalSize)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	tests := []struct {
		name string
		data []byte
		now  time.Time
		want error
	}{
		{"expired", sign(func(*Proposal) {}, bk), t0.Add(time.Hour), ErrExpired},
		{"wrong signer", sign(func(*Proposal) {}, ok), t0, ErrWrongKey},
		{"too long lived", sign(func(p *Proposal) { p.Expiry = t0.Add(time.Hour) }, bk), t0, ErrInvalid},
		{"no nonce", sign(func(p *Proposal) { p.Nonce = nil }, bk), t0, ErrInvalid},
		{"bad env", sign(func(p *Proposal) { p.Request.Env = []string{"noequals"} }, bk), t0, ErrInvalid},
		{"oversized", make([]byte, MaxProposalSize+1), t0, ErrTooLarge},
		{"garbage", []byte{1, 2, 3}, t0, ErrMalformed},
		{"wrong version", sign(func(p *Proposal) { p.Version = 2 }, bk), t0, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenProposal(tc.data, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecisionAndContract(t *testing.T) {
	bk, buyer := newKey(t)
	sk, seller := newKey(t)
	p := testProposal(buyer, seller)
	penv, _ := SignProposal(p, bk)
	d := &Decision{Version: Version, ProposalID: p.ID(), Seller: seller, Buyer: buyer, Verdict: Accept,
		PaymentTerms: []byte("terms"), FundBy: t0.Add(time.Minute), Issued: t0, Expiry: t0.Add(time.Minute)}
	denv, err := SignDecision(d, sk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignDecision(d, bk); err == nil {
		t.Fatal("buyer signed a seller's decision")
	}
	c := &Contract{ProposalEnv: penv, AcceptanceEnv: denv}
	got, err := OpenContract(c.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != p.ID() || string(got.Acceptance.PaymentTerms) != "terms" {
		t.Fatalf("contract %+v", got)
	}
	// An acceptance of another proposal does not make a contract.
	d2 := *d
	d2.ProposalID = strings.Repeat("00", 32)
	denv2, _ := SignDecision(&d2, sk)
	if _, err := OpenContract((&Contract{ProposalEnv: penv, AcceptanceEnv: denv2}).Marshal()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mismatched acceptance: %v", err)
	}
	rej := &Decision{Version: Version, Seller: seller, Verdict: Reject, Reason: ReasonCapacity, Issued: t0, Expiry: t0.Add(time.Minute)}
	renv, _ := SignDecision(rej, sk)
	r, err := OpenDecision(renv, t0)
	if err != nil || r.Reason != ReasonCapacity {
		t.Fatalf("reject: %v %+v", err, r)
	}
}

func TestReceiptRoundTrip(t *testing.T) {
	sk, seller := newKey(t)
	_, buyer := newKey(t)
	r := &Receipt{Version: Version, ContractID: strings.Repeat("cd", 32), Seller: seller, Buyer: buyer,
		ExitCode: -1, Reason: "exited", Usage: Usage{CPUTime: 1500 * time.Millisecond, PeakMemory: 1 << 20, Wall: time.Second},
		Outputs: []Output{{Name: "out.tar", SHA256: "sha256:" + strings.Repeat("ef", 32), Size: 10}},
		Billed:  5, Intervals: 2, Issued: t0, Expiry: t0.Add(ReceiptTTL)}
	env, err := SignReceipt(r, sk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenReceipt(env, t0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := r.MarshalRecord()
	b, _ := got.MarshalRecord()
	if !bytes.Equal(a, b) || got.ExitCode != -1 {
		t.Fatalf("round trip: %+v", got)
	}
}

// fuzzDecode runs every decoder on arbitrary bytes: never a panic, and what
// decodes re-encodes to the same bytes (the encoding is canonical), or the
// decoder refused it.
func fuzzSeeds(f *testing.F) {
	bk, buyer := newKey(f)
	sk, seller := newKey(f)
	p := testProposal(buyer, seller)
	pb, _ := p.MarshalRecord()
	penv, _ := SignProposal(p, bk)
	d := &Decision{Version: Version, ProposalID: p.ID(), Seller: seller, Buyer: buyer, Verdict: Accept,
		FundBy: t0.Add(time.Minute), Issued: t0, Expiry: t0.Add(time.Minute)}
	db, _ := d.MarshalRecord()
	denv, _ := SignDecision(d, sk)
	r := &Receipt{Version: Version, ContractID: p.ID(), Seller: seller, Buyer: buyer, Outputs: []Output{{Name: "o", SHA256: p.Request.Inputs[0].SHA256}}, Issued: t0, Expiry: t0.Add(time.Hour)}
	rb, _ := r.MarshalRecord()
	renv, _ := SignReceipt(r, sk)
	// A newer version's proposal: fields this one does not know.
	fp := testProposal(buyer, seller)
	fp.Request.Unknown, fp.Unknown = futureFields(19), futureFields(14)
	fb, _ := fp.MarshalRecord()
	fenv, _ := SignProposal(fp, bk)
	for _, s := range [][]byte{pb, penv, db, denv, rb, renv, fb, fenv, (&Contract{ProposalEnv: penv, AcceptanceEnv: denv}).Marshal(), {}, {0xff}} {
		f.Add(s)
	}
}

func FuzzProposal(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Proposal
		if p.UnmarshalRecord(b) == nil {
			if _, err := p.MarshalRecord(); err != nil {
				t.Fatalf("decoded proposal does not re-encode: %v", err)
			}
		}
		_, _ = OpenProposal(b, t0)
	})
}

func FuzzDecision(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decision
		if d.UnmarshalRecord(b) == nil {
			if _, err := d.MarshalRecord(); err != nil {
				t.Fatalf("decoded decision does not re-encode: %v", err)
			}
		}
		_, _ = OpenDecision(b, t0)
	})
}

func FuzzReceipt(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Receipt
		if r.UnmarshalRecord(b) == nil && r.ContractID != "" {
			if _, err := r.MarshalRecord(); err != nil {
				t.Fatalf("decoded receipt does not re-encode: %v", err)
			}
		}
		_, _ = OpenReceipt(b, t0)
	})
}

func FuzzContract(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = OpenContract(b)
	})
}

func FuzzRequest(f *testing.F) {
	_, buyer := newKey(f)
	p := testProposal(buyer, buyer)
	f.Add(p.Request.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if r.unmarshal(b) == nil {
			var r2 Request
			if err := r2.unmarshal(r.marshal()); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
		}
	})
}

var _ = record.Seal
