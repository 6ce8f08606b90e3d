package reputation

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type ident struct {
	key crypto.PrivKey
	id  peer.ID
}

func newIdent(t testing.TB, seed uint64) ident {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7}))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return ident{k, id}
}

// contracts is a ContractEvidence backed by a map.
type contracts map[string]PaidContract

func (c contracts) VerifyContract(_ context.Context, id string, _ []byte) (PaidContract, error) {
	pc, ok := c[id]
	if !ok {
		return pc, ErrUnverifiable
	}
	if pc.PaidSats == 0 {
		return pc, ErrUnpaid
	}
	return pc, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestBook(t testing.TB, cfg Config, ev ContractEvidence, c *clock, st Store) *Book {
	t.Helper()
	b, err := NewBook(Options{Config: cfg, Evidence: ev, Now: c.now, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func attest(t testing.TB, signer ident, a Attestation) []byte {
	t.Helper()
	if a.Version == 0 {
		a.Version = RecordVersion
	}
	if a.IssuedAt.IsZero() {
		a.IssuedAt = t0
	}
	if a.Expires.IsZero() {
		a.Expires = a.IssuedAt.Add(24 * time.Hour)
	}
	if a.Outcome == 0 {
		a.Outcome = OutcomeCompleted
	}
	env, err := SealAttestation(&a, signer.key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func trustStmt(t testing.TB, signer ident, subject peer.ID, w uint32, at time.Time) []byte {
	t.Helper()
	env, err := SealTrustStatement(&TrustStatement{Version: RecordVersion, Truster: signer.id, Subject: subject, WeightPM: w, IssuedAt: at}, signer.key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
