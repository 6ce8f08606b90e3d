package node

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/evidence"
	"github.com/blackbox-market/blackbox/pkg/evidence/evidencetest"
	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// TestAttesterKeepsAndPushesPaidContracts: when a bought contract ends, the
// node's attester builds the evidence from its contract store and channels,
// seals the attestation with the node key, keeps it (accepted by its own
// verifier) and pushes it to the connected peer it trusts, whose score of
// the seller moves; a contract without a payment yields no attestation.
func TestAttesterKeepsAndPushesPaidContracts(t *testing.T) {
	f := evidencetest.New(t)
	db, err := store.Open(filepath.Join(t.TempDir(), DBFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	hb, err := mn.AddPeer(f.BuyerKey, ma.StringCast("/ip4/10.0.0.1/tcp/4001"))
	if err != nil {
		t.Fatal(err)
	}
	hr, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	newBook := func(self peer.ID) *reputation.Book {
		b, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig(), Self: self,
			Evidence: &evidence.Verifier{Chain: f.Chain}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	book, remote := newBook(f.Buyer), newBook(hr.ID())
	reputation.NewExchange(hr, remote, nil)
	if err := remote.SetTrust(f.Buyer, 1); err != nil {
		t.Fatal(err)
	}
	if err := book.SetTrust(hr.ID(), 1); err != nil {
		t.Fatal(err)
	}
	n := &Node{key: f.BuyerKey, db: db, host: hb, payments: f.Pay, book: book, log: slog.New(slog.DiscardHandler)}
	n.exchange = reputation.NewExchange(hb, book, nil)
	f.Machine = contract.NewMachine(store.NewContractStore(db), contract.Timeouts{}, nil, nil)
	paid := f.Contract(t, f.Terms, 4000)
	unpaid := f.Contract(t, f.Terms, 0)

	a := newAttester(n, f.Buyer)
	rank := bookRanking{b: book, a: a}
	rank.Outcome(f.Seller, paid, contract.FaultNone)
	rank.Outcome(f.Seller, unpaid, contract.FaultSellerGone)
	// Issued in the background: wait for the push to land, then stop
	// (close cancels what is still in flight).
	for deadline := time.Now().Add(10 * time.Second); remote.Accepted() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	a.close()
	if got := book.Accepted(); got != 1 {
		t.Fatalf("kept %d attestations, want 1 (rejections %v)", got, book.Rejections())
	}
	// The buyer's own attestation does not count twice in its own view.
	if s := book.Score(f.Seller); len(s.Sources) != 1 || s.Sources[0].From != reputation.Self {
		t.Fatalf("sources %+v", s.Sources)
	}
	if got := remote.Accepted(); got != 1 {
		t.Fatalf("trusted peer accepted %d attestations, want 1 (rejections %v)", got, remote.Rejections())
	}
	if s := remote.Score(f.Seller); s.Evidence <= 0 || len(s.Sources) != 1 || s.Sources[0].From != f.Buyer {
		t.Fatalf("trusted peer's score of the seller: %+v", s)
	}
}
