package store

import (
	"path/filepath"
	"testing"
	"time"

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
	opts := reputation.Options{Config: reputation.DefaultConfig(), Store: NewReputationStore(db), Now: func() time.Time { return now }}
	b, err := reputation.NewBook(opts)
	if err != nil {
		t.Fatal(err)
	}
	p, q := peer.ID("peer-p"), peer.ID("peer-q")
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
	if es := b2.Edges(); len(es) != 1 || es[0].To != q || es[0].Weight != 0.4 {
		t.Errorf("edges after reopen: %+v", es)
	}
}
