package api

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// repBackend serves the reputation calls from a Book; the other Backend
// methods (one level deeper, so BookView's win) are not called.
type repBackend struct {
	otherCalls
	BookView
}

type otherCalls struct{ Backend }

// TestReputationOverTheAPI: a score whose evidence is this node's own (the
// source "from" is empty on the wire) decodes through the client (issue 9,
// 8a: it failed with "failed to parse peer ID"); DELETE forgets it; a bad
// peer ID is a bad request.
func TestReputationOverTheAPI(t *testing.T) {
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []reputation.Outcome{reputation.OutcomeFailed, reputation.OutcomeAbandoned} {
		if err := b.Observe(reputation.Observation{Peer: p, ContractID: o.String(), Outcome: o}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "api") // short: a unix socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := Listen(dir, repBackend{BookView: BookView{Book: b}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(dir)
	ctx := context.Background()

	sc, err := c.Score(ctx, p)
	if err != nil {
		t.Fatalf("score: %v", err)
	}
	if !sc.Blocked || len(sc.Sources) != 1 || sc.Sources[0].From != reputation.Self || sc.Sources[0].Outcomes["abandoned"] < 0.99 {
		t.Fatalf("score %+v", sc)
	}
	all, err := c.Scores(ctx)
	if err != nil || len(all) != 1 || all[0].Peer != p {
		t.Fatalf("scores: %v %+v", err, all)
	}
	sc, err = c.Forget(ctx, p)
	if err != nil || sc.Blocked || sc.Evidence != 0 {
		t.Fatalf("forget: %v %+v", err, sc)
	}
	if all, err := c.Scores(ctx); err != nil || len(all) != 0 {
		t.Fatalf("scores after forget: %v %+v", err, all)
	}
	err = c.do(ctx, "DELETE", "/v1/reputation/not-a-peer", nil, &sc)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("forget of a bad peer ID: %v", err)
	}
}
