package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// startReputation opens this node's reputation book on the database. It
// runs before the host, whose connection gater asks the book.
//
// No contract evidence verifier is configured yet, so attestations received
// from peers are stored and counted as unverifiable: only this node's own
// observations move scores. (Verifying "signed by both and paid" needs the
// channel's funding on chain; see the issue note.)
func (n *Node) startReputation() error {
	id, err := peer.IDFromPrivateKey(n.key)
	if err != nil {
		return err
	}
	b, err := reputation.NewBook(reputation.Options{
		Config: n.cfg.Reputation, Self: id,
		Store: store.NewReputationStore(n.db), Log: n.log,
	})
	if err != nil {
		return fmt.Errorf("reputation: %w", err)
	}
	n.book = b
	return nil
}

// bookRanking adapts the reputation book to what the buyer's ranking needs.
type bookRanking struct{ b *reputation.Book }

var _ contract.Reputation = bookRanking{}

func (r bookRanking) Score(p peer.ID) (float64, float64) {
	s := r.b.Score(p)
	return s.Mean, s.Evidence
}

// Blocked keeps sellers below the threshold out of the ranking.
func (r bookRanking) Blocked(p peer.ID) bool { return r.b.Blocked(p) }

// Outcome records how a contract with a seller ended as this node's own
// observation.
func (r bookRanking) Outcome(p peer.ID, contractID string, ok bool, why string) {
	o := reputation.OutcomeCompleted
	switch {
	case ok:
	case strings.Contains(why, "heartbeat"), strings.Contains(why, "vanish"), strings.Contains(why, "stream"):
		o = reputation.OutcomeAbandoned
	default:
		o = reputation.OutcomeFailed
	}
	_ = r.b.Observe(reputation.Observation{Peer: p, ContractID: contractID, Outcome: o})
}

// Scores implements api.Backend.
func (n *Node) Scores(ctx context.Context) ([]reputation.Score, error) {
	var out []reputation.Score
	for _, p := range n.book.Peers() {
		out = append(out, n.book.Score(p))
	}
	slices.SortStableFunc(out, func(a, b reputation.Score) int {
		switch {
		case a.Mean > b.Mean:
			return -1
		case a.Mean < b.Mean:
			return 1
		}
		return 0
	})
	return out, nil
}

// Score implements api.Backend.
func (n *Node) Score(ctx context.Context, p peer.ID) (reputation.Score, error) {
	return n.book.Score(p), nil
}

// Trust implements api.Backend.
func (n *Node) Trust(ctx context.Context) ([]api.TrustEdge, error) {
	return api.TrustEdges(n.book.Edges()), nil
}

// SetTrust implements api.Backend.
func (n *Node) SetTrust(ctx context.Context, p peer.ID, weight float64) error {
	if weight < 0 || weight > 1 {
		return fmt.Errorf("%w: trust weight %v: must be in [0, 1]", api.ErrBadRequest, weight)
	}
	return n.book.SetTrust(p, weight)
}
