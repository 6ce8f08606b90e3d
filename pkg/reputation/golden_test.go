package reputation

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

// TestGoldenEncodings pins the bytes reputation records encode to: a change
// of codec must not change one byte on the wire (signatures are over them).
// Zero values are written, unlike the contract and offer codecs.
func TestGoldenEncodings(t *testing.T) {
	alice, bob := newIdent(t, 1), newIdent(t, 2)
	a := &Attestation{Version: RecordVersion, ContractID: "c1", Attester: alice.id, Subject: bob.id,
		Outcome: OutcomeLate, UsagePermille: 930, PaidSats: 12345, IssuedAt: t0, Expires: t0.Add(time.Hour),
		Evidence: []byte("proof")}
	zero := &Attestation{Version: RecordVersion, ContractID: "c2", Attester: alice.id, Subject: bob.id,
		Outcome: OutcomeLate, IssuedAt: t0, Expires: t0}
	ts := &TrustStatement{Version: RecordVersion, Truster: alice.id, Subject: bob.id, WeightPM: 0, IssuedAt: t0}
	for _, c := range []struct {
		name string
		rec  interface {
			MarshalRecord() ([]byte, error)
		}
		back interface {
			MarshalRecord() ([]byte, error)
			UnmarshalRecord([]byte) error
		}
		want string
	}{
		{"attestation", a, new(Attestation), goldenAttestation},
		{"attestation with zeros", zero, new(Attestation), goldenZeroAttestation},
		{"trust statement", ts, new(TrustStatement), goldenTrust},
	} {
		b, err := c.rec.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != c.want {
			t.Errorf("%s encodes to\n%s\nwant\n%s", c.name, got, c.want)
			continue
		}
		if err := c.back.UnmarshalRecord(b); err != nil {
			t.Fatalf("%s: decode: %v", c.name, err)
		}
		if again, err := c.back.MarshalRecord(); err != nil || !bytes.Equal(again, b) {
			t.Errorf("%s: decode and encode again: %x, %v", c.name, again, err)
		}
	}
}

// TestDecodeErrorKinds pins that every kind of bad field is ErrMalformed.
func TestDecodeErrorKinds(t *testing.T) {
	alice, bob := newIdent(t, 1), newIdent(t, 2)
	good, err := (&TrustStatement{Version: RecordVersion, Truster: alice.id, Subject: bob.id, WeightPM: 5, IssuedAt: t0}).MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"bad tag":         {0x80},
		"out of order":    append(append([]byte{}, good[2:]...), good[:2]...),
		"repeated":        append([]byte{0x08, 1}, good...),
		"unknown field":   append(append([]byte{}, good...), 0x30, 1),
		"wrong wire type": {0x0a, 0},
		"truncated":       good[:len(good)-1],
		"weight range":    {0x08, 1, 0x20, 0xe9, 0x07},
		"missing fields":  {0x08, 1},
	} {
		var ts TrustStatement
		if err := ts.UnmarshalRecord(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var a Attestation
	if err := a.UnmarshalRecord([]byte{0x08, 1, 0x12, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty contract id: %v", err)
	}
}

// TestGoldenStoreEncodings pins what a Store keeps: observations and trust
// edges read back from an existing database.
func TestGoldenStoreEncodings(t *testing.T) {
	alice, bob := newIdent(t, 1), newIdent(t, 2)
	o := Observation{Peer: bob.id, ContractID: "c1", Outcome: OutcomeLate, UsageRatio: 0.75, At: t0}
	b := MarshalObservation(o)
	if got := hex.EncodeToString(b); got != goldenObservation {
		t.Errorf("observation encodes to %s, want %s", got, goldenObservation)
	}
	if back, err := UnmarshalObservation(b); err != nil || !bytes.Equal(MarshalObservation(back), b) {
		t.Errorf("observation round trip: %+v %v", back, err)
	}
	e := Edge{From: alice.id, To: bob.id, Weight: 0.5, Updated: t0}
	b = MarshalEdge(e)
	if got := hex.EncodeToString(b); got != goldenEdge {
		t.Errorf("edge encodes to %s, want %s", got, goldenEdge)
	}
	if back, err := UnmarshalEdge(b); err != nil || !bytes.Equal(MarshalEdge(back), b) {
		t.Errorf("edge round trip: %+v %v", back, err)
	}
	if _, err := UnmarshalEdge([]byte{0x18, 1}); !errors.Is(err, ErrMalformed) {
		t.Errorf("weight as varint: %v", err)
	}
}

const (
	goldenObservation     = "0a260024080112206709e19eb318fdecefa2fc36a273a2a2084dc7ce01a054053a78b52a1b08bd1412026331180221000000000000e83f288080da9e9bbbadcc18"
	goldenEdge            = "0a260024080112208c5434ffc994a46d2e44324d426d6ba8ba12505d963f855d875c433d1950853a12260024080112206709e19eb318fdecefa2fc36a273a2a2084dc7ce01a054053a78b52a1b08bd1419000000000000e03f208080da9e9bbbadcc18"
	goldenAttestation     = "0801120263311a260024080112208c5434ffc994a46d2e44324d426d6ba8ba12505d963f855d875c433d1950853a22260024080112206709e19eb318fdecefa2fc36a273a2a2084dc7ce01a054053a78b52a1b08bd14280230a20738b96040c0d490cd0648d0f090cd06520570726f6f66"
	goldenZeroAttestation = "0801120263321a260024080112208c5434ffc994a46d2e44324d426d6ba8ba12505d963f855d875c433d1950853a22260024080112206709e19eb318fdecefa2fc36a273a2a2084dc7ce01a054053a78b52a1b08bd1428023000380040c0d490cd0648c0d490cd06"
	goldenTrust           = "080112260024080112208c5434ffc994a46d2e44324d426d6ba8ba12505d963f855d875c433d1950853a1a260024080112206709e19eb318fdecefa2fc36a273a2a2084dc7ce01a054053a78b52a1b08bd14200028c0d490cd06"
)
