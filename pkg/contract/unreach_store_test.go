package contract_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

// TestUnreachableSurvivesRestart: a seller the buyer could not reach is
// still ranked last by a new buyer on the same bbolt database after the old
// one closed and the database was reopened, and forgotten once its time is
// up.
func TestUnreachableSurvivesRestart(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	gen := func() peer.ID {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		return h.ID()
	}
	bh, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	far, near := gen(), gen()
	path := filepath.Join(t.TempDir(), "db")
	clock := contract.NewTestClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	open := func() (*store.DB, *contract.Buyer) {
		db, err := store.Open(path, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return db, contract.StartTestBuyer(t, bh, store.NewContractStore(db), clock)
	}
	cands := []contract.Candidate{{Seller: far}, {Seller: near}}
	order := func(b *contract.Buyer) []peer.ID {
		var ids []peer.ID
		for _, c := range b.RankReachableFirst(append([]contract.Candidate(nil), cands...)) {
			ids = append(ids, c.Seller)
		}
		return ids
	}

	db, b := open()
	b.MarkUnreachable(far)
	until := b.Unreachable()[far]
	if until.IsZero() {
		t.Fatal("the marked seller is not listed")
	}
	b.Close()
	db.Close()

	clock.Add(contract.DefaultUnreachableFor / 2)
	db, b = open()
	if got := b.Unreachable(); len(got) != 1 || !got[far].Equal(until) {
		t.Fatalf("after a restart the buyer lists %v, want %s until %s", got, far, until)
	}
	if got := order(b); got[0] != near || got[1] != far {
		t.Fatalf("after a restart ranked %v, want the unreachable %s last", got, far)
	}
	b.Close()
	db.Close()

	clock.Add(contract.DefaultUnreachableFor)
	db, b = open()
	defer db.Close()
	defer b.Close()
	if got := b.Unreachable(); len(got) != 0 {
		t.Fatalf("expired, yet the buyer lists %v", got)
	}
	if got := order(b); got[0] != far || got[1] != near {
		t.Fatalf("expired, yet ranked %v", got)
	}
	// Expired entries are dropped from the database on load, not only hidden.
	n := 0
	_ = store.NewContractStore(db).View(func(kv contract.KV) error {
		return kv.ForEach("contract_unreachable", "", func(string, []byte) error { n++; return nil })
	})
	if n != 0 {
		t.Fatalf("%d expired entries left in the database", n)
	}
}
