package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// A Book over the bbolt store comes back identical after the file is
// closed and reopened.
func TestReputationStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	attester, _ := peer.IDFromPrivateKey(key)
	_, qpub, _ := crypto.GenerateEd25519Key(nil)
	q, _ := peer.IDFromPublicKey(qpub)
	p := peer.ID("peer-p")
	ev := reputation.EvidenceFunc(func(context.Context, string, []byte) (reputation.PaidContract, error) {
		return reputation.PaidContract{Buyer: attester, Seller: q, PaidSats: 5000}, nil
	})
	opts := reputation.Options{Config: reputation.DefaultConfig(), Store: NewReputationStore(db), Evidence: ev, Now: func() time.Time { return now }}
	b, err := reputation.NewBook(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []reputation.Observation{
		{Peer: p, ContractID: "c1", Outcome: reputation.OutcomeCompleted, At: now},
		{Peer: p, ContractID: "c2", Outcome: reputation.OutcomeLate, UsageRatio: 0.8, At: now},
		{Peer: q, ContractID: "c3", Outcome: reputation.OutcomeAbandoned, At: now},
	} {
		if err := b.Observe(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetTrust(q, 0.4); err != nil {
		t.Fatal(err)
	}
	if err := b.SetTrust(attester, 1); err != nil {
		t.Fatal(err)
	}
	env, err := reputation.SealAttestation(&reputation.Attestation{Version: reputation.RecordVersion, ContractID: "k",
		Attester: attester, Subject: q, Outcome: reputation.OutcomeSpotCheckMismatch, IssuedAt: now, Expires: now.Add(time.Hour)}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddRecord(context.Background(), attester, env); err != nil {
		t.Fatal(err)
	}
	if err := b.SetTrust(p, 0.9); err != nil {
		t.Fatal(err)
	}
	if err := b.SetTrust(p, 0); err != nil {
		t.Fatal(err)
	}
	want := []reputation.Score{b.Score(p), b.Score(q)}
	db.Close()

	db, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opts.Store = NewReputationStore(db)
	b2, err := reputation.NewBook(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []peer.ID{p, q} {
		got := b2.Score(id)
		if got.Mean != want[i].Mean || got.Evidence != want[i].Evidence || got.Blocked != want[i].Blocked {
			t.Errorf("%s after reopen: %+v, want %+v", id, got, want[i])
		}
	}
	if es := b2.Edges(); len(es) != 2 {
		t.Errorf("edges after reopen: %+v", es)
	}
	if len(b2.Score(q).Sources) != 2 {
		t.Errorf("attestation lost on reopen: %+v", b2.Score(q))
	}
	if err := b2.AddRecord(context.Background(), attester, env); !errors.Is(err, reputation.ErrRejected) {
		t.Errorf("replay after reopen: %v", err)
	}
}
