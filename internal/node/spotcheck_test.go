package node

import (
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/evidence/evidencetest"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

func spotPeer(t *testing.T) peer.ID {
	t.Helper()
	_, id := evidencetest.Identity(t)
	return id
}

// A spot check's majority turns into an own observation that lowers the
// disagreeing seller's score; the agreeing sellers' scores do not move, and
// without a majority nothing is recorded.
func TestBookRankingSpotCheckMismatch(t *testing.T) {
	// A fixed clock: scores decay with time, and the test compares them.
	t0 := time.Now()
	book, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig(), Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	rank := bookRanking{b: book}
	bad, good1, good2 := spotPeer(t), spotPeer(t), spotPeer(t)
	for i, p := range []peer.ID{bad, good1, good2} {
		for k := range 3 {
			_ = book.Observe(reputation.Observation{Peer: p, ContractID: string(rune('a'+i)) + string(rune('0'+k)),
				Outcome: reputation.OutcomeCompleted, At: t0})
		}
	}
	before := map[peer.ID]reputation.Score{bad: book.Score(bad), good1: book.Score(good1), good2: book.Score(good2)}

	// Two sellers disagreeing: no majority, nothing recorded.
	rank.SpotCheckResult([]contract.SpotOutcome{{Seller: bad, ContractID: "c1", Digest: "sha256:x"}, {Seller: good1, ContractID: "c2", Digest: "sha256:y"}})
	if s := book.Score(bad); s.Mean != before[bad].Mean || s.Evidence != before[bad].Evidence {
		t.Fatalf("undecided spot check moved the score: %+v -> %+v", before[bad], s)
	}

	rank.SpotCheckResult([]contract.SpotOutcome{
		{Seller: bad, ContractID: "c1", Digest: "sha256:x"},
		{Seller: good1, ContractID: "c2", Digest: "sha256:y"},
		{Seller: good2, ContractID: "c3", Digest: "sha256:y"},
	})
	if s := book.Score(bad); s.Mean >= before[bad].Mean {
		t.Fatalf("mismatching seller's score %v, was %v", s.Mean, before[bad].Mean)
	}
	for _, p := range []peer.ID{good1, good2} {
		if s := book.Score(p); s.Mean != before[p].Mean || s.Evidence != before[p].Evidence {
			t.Fatalf("matching seller's score moved: %+v -> %+v", before[p], s)
		}
	}
	// The book decides whether to check; a non-deterministic job never
	// reaches it (the buyer engine only asks for deterministic ones).
	_ = rank.ShouldSpotCheck(bad)
}
