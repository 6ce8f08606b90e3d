package api

import (
	"context"
	"fmt"
	"slices"

	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// BookView serves the reputation part of a Backend from a reputation book:
// the daemon's, or, when no daemon runs, one the CLI opens on the database.
type BookView struct{ Book *reputation.Book }

// Scores returns every peer's score, best first.
func (v BookView) Scores(context.Context) ([]reputation.Score, error) {
	var out []reputation.Score
	for _, p := range v.Book.Peers() {
		out = append(out, v.Book.Score(p))
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

// Score returns p's score.
func (v BookView) Score(_ context.Context, p peer.ID) (reputation.Score, error) {
	return v.Book.Score(p), nil
}

// Forget drops this node's own evidence about p (and a block) and returns
// p's score after it.
func (v BookView) Forget(_ context.Context, p peer.ID) (reputation.Score, error) {
	if err := v.Book.Forget(p); err != nil {
		return reputation.Score{}, err
	}
	return v.Book.Score(p), nil
}

// Trust returns the trust edges this node set.
func (v BookView) Trust(context.Context) ([]TrustEdge, error) {
	return TrustEdges(v.Book.Edges()), nil
}

// SetTrust sets how much this node trusts p's attestations, in [0, 1].
func (v BookView) SetTrust(_ context.Context, p peer.ID, weight float64) error {
	if weight < 0 || weight > 1 {
		return fmt.Errorf("%w: trust weight %v: must be in [0, 1]", ErrBadRequest, weight)
	}
	return v.Book.SetTrust(p, weight)
}
