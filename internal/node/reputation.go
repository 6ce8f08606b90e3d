package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/evidence"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// startReputation opens this node's reputation book on the database. It
// runs before the host, whose connection gater asks the book, and after the
// payments, whose chain the contract evidence verifier asks: an attestation
// counts only when its evidence shows a contract both parties signed and a
// payment on a channel funded on chain (pkg/evidence). Without payments
// nothing verifies, and only this node's own observations move scores.
func (n *Node) startReputation() error {
	id, err := peer.IDFromPrivateKey(n.key)
	if err != nil {
		return err
	}
	ev := &evidence.Verifier{}
	if n.chain != nil {
		ev.Chain = n.chain
	}
	b, err := reputation.NewBook(reputation.Options{
		Config: n.cfg.Reputation, Self: id, Evidence: ev,
		Store: store.NewReputationStore(n.db), Log: n.log,
	})
	if err != nil {
		return fmt.Errorf("reputation: %w", err)
	}
	n.book = b
	n.BookView = api.BookView{Book: b}
	n.attester = newAttester(n, id)
	n.push(func() error { n.attester.close(); return nil })
	return nil
}

// attestTimeout bounds building, keeping and pushing one attestation.
const attestTimeout = 30 * time.Second

// attester issues this node's attestations as a buyer: when a contract
// ends, an attestation about the seller with the contract evidence,
// sealed with the node's identity key, kept in the book and pushed to the
// connected peers this node trusts. It works in the background, never in
// the contract engine's way.
type attester struct {
	n    *Node
	self peer.ID

	mu     sync.Mutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newAttester(n *Node, self peer.ID) *attester {
	ctx, cancel := context.WithCancel(context.Background())
	return &attester{n: n, self: self, ctx: ctx, cancel: cancel}
}

// close stops issuing and waits for attestations in flight.
func (a *attester) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
}

// issue attests, in the background, how contractID with seller ended.
func (a *attester) issue(seller peer.ID, contractID string, o reputation.Outcome, at time.Time) {
	if contractID == "" || a.n.payments == nil || a.n.db == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, attestTimeout)
		defer cancel()
		obs := reputation.Observation{Peer: seller, ContractID: contractID, Outcome: o, At: at}
		if err := a.attest(ctx, obs); err != nil {
			lvl := slog.LevelWarn
			if errors.Is(err, evidence.ErrNoEvidence) || errors.Is(err, contract.ErrNotFound) {
				lvl = slog.LevelDebug
			}
			a.n.log.Log(ctx, lvl, "reputation: no attestation", "contract", contractID, "peer", seller, "err", err)
		}
	}()
}

// attest builds, seals, keeps and pushes one attestation.
func (a *attester) attest(ctx context.Context, o reputation.Observation) error {
	n := a.n
	machine := contract.NewMachine(store.NewContractStore(n.db), contract.Timeouts{}, nil, n.log)
	ev, paid, err := evidence.ForBuyer(n.payments, machine, o.ContractID)
	if err != nil {
		return err
	}
	att := n.book.NewAttestation(a.self, o, uint64(paid), ev)
	sealed, err := reputation.SealAttestation(att, n.key)
	if err != nil {
		return err
	}
	if max := n.book.Config().MaxAttestationBytes; len(sealed) > max {
		return fmt.Errorf("attestation of %d bytes exceeds max_attestation_bytes %d", len(sealed), max)
	}
	// Kept through the same checks as anyone else's: what this node's
	// verifier refuses, its peers would refuse too.
	if err := n.book.AddRecord(ctx, a.self, sealed); err != nil {
		return fmt.Errorf("keep attestation: %w", err)
	}
	x := a.exchange()
	if x == nil {
		return nil
	}
	var pushed []peer.ID
	for _, p := range a.trustedPeers() {
		if ctx.Err() != nil {
			break
		}
		if _, err := x.Push(ctx, p, [][]byte{sealed}); err != nil {
			n.log.Debug("reputation: push attestation", "peer", p, "contract", o.ContractID, "err", err)
			continue
		}
		pushed = append(pushed, p)
	}
	n.log.Debug("reputation: attested", "contract", o.ContractID, "peer", o.Peer, "outcome", o.Outcome, "paid_sats", paid, "pushed_to", len(pushed))
	return nil
}

// trustedPeers are the connected peers this node explicitly trusts.
func (a *attester) trustedPeers() []peer.ID {
	h := a.n.host
	if h == nil {
		return nil
	}
	var out []peer.ID
	for _, e := range a.n.book.Edges() {
		if e.Weight > 0 && e.To != a.self && h.Network().Connectedness(e.To) == network.Connected {
			out = append(out, e.To)
		}
	}
	return out
}

// exchange is the node's attestation exchange (nil before the host runs).
func (a *attester) exchange() *reputation.Exchange { return a.n.exchange }

// bookRanking adapts the reputation book to what the buyer's ranking needs;
// a, if set, attests paid contracts when they end.
type bookRanking struct {
	b *reputation.Book
	a *attester
}

var (
	_ contract.Reputation  = bookRanking{}
	_ contract.Ranker      = bookRanking{}
	_ contract.SpotChecker = bookRanking{}
)

// Rank leaves the order of the candidates to the book's selection policy,
// Book.Rank, the one the simulation measures (make sim); the blocked ones
// are dropped.
func (r bookRanking) Rank(cands []contract.Candidate, purpose contract.Purpose, rng *rand.Rand) []contract.Candidate {
	in := make([]reputation.Candidate, len(cands))
	for i, c := range cands {
		in[i] = reputation.Candidate{Peer: c.Seller, PriceSats: uint64(max(c.Terms.Total, 0)), RTT: c.RTT, Ref: i}
	}
	var opts []reputation.RankOption
	switch purpose {
	case contract.ForUncheckableJob:
		opts = append(opts, reputation.Uncheckable())
	case contract.ForSpotCheck:
		opts = append(opts, reputation.ForSpotCheck())
	}
	ranked, _ := r.b.Rank(in, rng, opts...)
	out := make([]contract.Candidate, len(ranked))
	for i, x := range ranked {
		c := cands[x.Ref.(int)]
		c.Score, c.Evidence, c.Utility, c.Explore = x.Mean, x.Evidence, x.Utility, x.Explore
		out[i] = c
	}
	return out
}

func (r bookRanking) Score(p peer.ID) (float64, float64) {
	s := r.b.Score(p)
	return s.Mean, s.Evidence
}

// Blocked keeps sellers below the threshold out of the ranking.
func (r bookRanking) Blocked(p peer.ID) bool { return r.b.Blocked(p) }

// Outcome records how a contract with a seller ended as this node's own
// observation and, when the contract was paid, attests it to the peers
// this node trusts (in the background). Faults that are not the seller's
// (this node's own, an unreachable seller, a cancellation) record nothing.
func (r bookRanking) Outcome(p peer.ID, contractID string, f contract.Fault) {
	o, ok := outcomeOf(f)
	if !ok {
		return
	}
	at := time.Now()
	_ = r.b.Observe(reputation.Observation{Peer: p, ContractID: contractID, Outcome: o, At: at})
	if r.a != nil {
		r.a.issue(p, contractID, o, at)
	}
}

// ShouldSpotCheck asks the book whether a deterministic job the seller
// completed runs again elsewhere: every job of a seller with a short
// streak of verified results, about 1/n after n of them, down to a floor.
func (r bookRanking) ShouldSpotCheck(p peer.ID) bool {
	return r.b.ShouldSpotCheck(p, true, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
}

// SpotCheckResult lets the majority of a spot check's runs decide: each
// seller that disagreed gets a spot-check-mismatch observation, each that
// agreed a verified one (which lengthens its streak and adds nothing to its
// score), attested when the contract was paid. Without a majority nothing
// is recorded.
func (r bookRanking) SpotCheckResult(results []contract.SpotOutcome) {
	rs := make([]reputation.SpotResult, len(results))
	for i, o := range results {
		rs[i] = reputation.SpotResult{Peer: o.Seller, ContractID: o.ContractID, Digest: o.Digest}
	}
	verdicts, _ := reputation.ResolveSpotCheck(rs, time.Now())
	for _, o := range verdicts {
		_ = r.b.Observe(o)
		if r.a != nil {
			r.a.issue(o.Peer, o.ContractID, o.Outcome, o.At)
		}
	}
}

// outcomeOf maps how the buyer engine says a contract ended to the outcome
// held against the seller; false: nothing is (not the seller's fault).
func outcomeOf(f contract.Fault) (reputation.Outcome, bool) {
	switch f {
	case contract.FaultNone:
		return reputation.OutcomeCompleted, true
	case contract.FaultSeller:
		return reputation.OutcomeFailed, true
	case contract.FaultSellerGone:
		return reputation.OutcomeAbandoned, true
	case contract.FaultSellerLied:
		return reputation.OutcomeInvalid, true
	}
	return 0, false
}
