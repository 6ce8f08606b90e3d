package reputation

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	alice, bob := newIdent(t, 1), newIdent(t, 2)
	a := Attestation{Version: RecordVersion, ContractID: "c1", Attester: alice.id, Subject: bob.id,
		Outcome: OutcomeLate, UsagePermille: 930, PaidSats: 12345, IssuedAt: t0, Expires: t0.Add(time.Hour),
		Evidence: []byte("proof")}
	rec, err := DecodeRecord(attest(t, alice, a), 8192)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.(*Attestation)
	if got.ContractID != a.ContractID || got.Attester != a.Attester || got.Subject != a.Subject ||
		got.Outcome != a.Outcome || got.UsagePermille != 930 || got.PaidSats != 12345 ||
		!got.IssuedAt.Equal(t0) || !got.Expires.Equal(a.Expires) || !bytes.Equal(got.Evidence, a.Evidence) {
		t.Fatalf("round trip: got %+v want %+v", got, a)
	}
	// Deterministic: the same record marshals to the same bytes.
	b1, _ := got.MarshalRecord()
	b2, _ := a.MarshalRecord()
	if !bytes.Equal(b1, b2) {
		t.Fatal("encoding not deterministic")
	}
	ts, err := DecodeRecord(trustStmt(t, alice, bob.id, 800, t0), 8192)
	if err != nil {
		t.Fatal(err)
	}
	if s := ts.(*TrustStatement); s.Truster != alice.id || s.Subject != bob.id || s.WeightPM != 800 {
		t.Fatalf("trust statement round trip: %+v", s)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	alice, bob, mallory := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	good := attest(t, alice, Attestation{ContractID: "c1", Attester: alice.id, Subject: bob.id})
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-70] ^= 1 // inside the payload or signature
	noVersion, _ := (&Attestation{ContractID: "c", Attester: alice.id, Subject: bob.id, Outcome: 1}).MarshalRecord()
	tests := []struct {
		name string
		data []byte
		max  int
		want error
	}{
		{"oversized", good, len(good) - 1, ErrOversized},
		{"forged author", attest(t, mallory, Attestation{ContractID: "c1", Attester: alice.id, Subject: bob.id}), 8192, ErrForged},
		{"tampered", tampered, 8192, nil},
		{"garbage", []byte("not an envelope"), 8192, ErrMalformed},
		{"empty", nil, 8192, ErrMalformed},
		{"bare payload", noVersion, 8192, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRecord(tc.data, tc.max)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUnmarshalAttestationStrict(t *testing.T) {
	alice, bob := newIdent(t, 1), newIdent(t, 2)
	a := &Attestation{Version: RecordVersion, ContractID: "c", Attester: alice.id, Subject: bob.id, Outcome: OutcomeCompleted, IssuedAt: t0, Expires: t0}
	raw, _ := a.MarshalRecord()
	tests := []struct {
		name string
		mut  func(*Attestation)
	}{
		{"version 2", func(a *Attestation) { a.Version = 2 }},
		{"abuse outcome", func(a *Attestation) { a.Outcome = OutcomeAbuse }},
		{"double-spent funding", func(a *Attestation) { a.Outcome = OutcomeFundingDoubleSpent }},
		{"unconfirmed funding", func(a *Attestation) { a.Outcome = OutcomeFundingUnconfirmed }},
		{"unknown outcome", func(a *Attestation) { a.Outcome = 99 }},
		{"usage out of range", func(a *Attestation) { a.UsagePermille = 20000 }},
		{"expires before issued", func(a *Attestation) { a.Expires = t0.Add(-time.Second) }},
		{"empty contract", func(a *Attestation) { a.ContractID = "" }},
		{"long contract", func(a *Attestation) { a.ContractID = string(make([]byte, 200)) }},
	}
	var ok Attestation
	if err := ok.UnmarshalRecord(raw); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := *a
			tc.mut(&c)
			raw, _ := c.MarshalRecord()
			var got Attestation
			if err := got.UnmarshalRecord(raw); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
		})
	}
	// Fields out of order or repeated are refused: one record, one encoding.
	var got Attestation
	if err := got.UnmarshalRecord(append(raw, raw...)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("repeated fields: %v", err)
	}
}

// FuzzDecodeRecord: the decoder never panics, and whatever it accepts
// re-encodes to a payload that decodes to the same record.
func FuzzDecodeRecord(f *testing.F) {
	alice, bob := newIdent(f, 1), newIdent(f, 2)
	f.Add(attest(f, alice, Attestation{ContractID: "c1", Attester: alice.id, Subject: bob.id, Evidence: []byte{1, 2}}))
	f.Add(trustStmt(f, alice, bob.id, 500, t0))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := DecodeRecord(data, 8192)
		if err != nil {
			return
		}
		raw, err := rec.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		switch r := rec.(type) {
		case *Attestation:
			var again Attestation
			if err := again.UnmarshalRecord(raw); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			raw2, _ := again.MarshalRecord()
			if !bytes.Equal(raw, raw2) {
				t.Fatalf("unstable encoding for %+v", r)
			}
		case *TrustStatement:
			var again TrustStatement
			if err := again.UnmarshalRecord(raw); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
		}
	})
}

// FuzzUnmarshalAttestation fuzzes the payload decoder alone (no signature
// in the way).
func FuzzUnmarshalAttestation(f *testing.F) {
	alice, bob := newIdent(f, 1), newIdent(f, 2)
	raw, _ := (&Attestation{Version: 1, ContractID: "c", Attester: alice.id, Subject: bob.id, Outcome: 1, IssuedAt: t0, Expires: t0}).MarshalRecord()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		var a Attestation
		if a.UnmarshalRecord(data) != nil {
			return
		}
		out, _ := a.MarshalRecord()
		var b Attestation
		if err := b.UnmarshalRecord(out); err != nil {
			t.Fatalf("accepted %x but not its re-encoding: %v", data, err)
		}
	})
}
