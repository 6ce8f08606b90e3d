package payment

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

func TestFilterBudget(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var b filterBudget
	steps := []struct {
		peer string
		n    int64
		at   time.Duration
		ok   bool
	}{
		{"a", 1000, 0, true},
		{"a", 1016, time.Hour, true},                           // exactly the budget
		{"a", 1, 2 * time.Hour, false},                         // over it
		{"b", zeroConfFilterBudget, 2 * time.Hour, true},       // another buyer's own budget
		{"a", 0, 3 * time.Hour, true},                          // nothing to fetch costs nothing
		{"a", 1, zeroConfBudgetWindow, true},                   // a new window
		{"b", zeroConfFilterBudget + 1, 30 * time.Hour, false}, // more than a whole budget at once
		{"b", 500, 30 * time.Hour, true},                       // a refusal took nothing
	}
	for i, s := range steps {
		err := b.charge(s.peer, s.n, now.Add(s.at))
		if (err == nil) != s.ok {
			t.Fatalf("step %d (%s %d at +%s): %v, want ok=%v", i, s.peer, s.n, s.at, err, s.ok)
		}
		if err != nil && (!errors.Is(err, ErrNotZeroConf) || !strings.Contains(err.Error(), "compact filters")) {
			t.Fatalf("step %d: the refusal %q does not say why", i, err)
		}
	}
	// The peers remembered stay bounded: expired ones go.
	for i := range zeroConfBudgetPeers + 10 {
		b.charge(string(rune(i)), 1, now.Add(time.Duration(i)*time.Second))
	}
	b.charge("late", 1, now.Add(48*time.Hour))
	if len(b.peers) != 2 { // "late", and "b" (its window began at +30h)
		t.Fatalf("%d peers remembered", len(b.peers))
	}
	if c := hintCost(3, []int32{990, 0, 2000, 5}, 1000); c != 11 {
		t.Fatalf("hint cost %d, want 11 (990..1000; no hint; a hint past the tip; a fourth hint with no input)", c)
	}
}

// hintSource answers every hinted or script lookup with an output and
// counts the hinted ones.
type hintSource struct{ hinted int }

func (s *hintSource) RecentOutput(ctx context.Context, op wire.OutPoint, pkScript []byte, within int32) (*PrevOut, error) {
	return &PrevOut{Out: wire.NewTxOut(1000, pkScript), Height: 900}, nil
}

func (s *hintSource) OutputAt(ctx context.Context, op wire.OutPoint, height int32) (*PrevOut, error) {
	s.hinted++
	return &PrevOut{Out: wire.NewTxOut(1000, []byte{0, 20}), Height: height}, nil
}

// TestHintBudgetRefuses: a buyer whose hints name old blocks has its
// hinted checks made until its budget is spent; then the check is refused
// before any lookup, saying why, and another buyer's checks go on.
func TestHintBudgetRefuses(t *testing.T) {
	ctx := context.Background()
	chain := paytest.NewChain() // tip 1000
	m := newManager(t, RegtestConfig(), chain, NewMemStore(), seed(3), nil)
	tx := wire.NewMsgTx(2)
	for i := range 4 {
		tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{byte(i + 1)}, 0), nil, nil))
	}
	hints := []int32{801, 801, 801, 801} // 200 filters each: 800 a check
	src := &hintSource{}
	for i := range 2 {
		if _, err := m.lightPrevOuts(ctx, "greedy", src, tx, hints); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	_, err := m.lightPrevOuts(ctx, "greedy", src, tx, hints)
	if !errors.Is(err, ErrNotZeroConf) || !strings.Contains(err.Error(), "would have the light client fetch 800 compact filters") {
		t.Fatalf("a third check: %v, want refused for the budget", err)
	}
	if src.hinted != 8 {
		t.Fatalf("%d hinted lookups, want 8: the refused check must look nothing up", src.hinted)
	}
	if _, err := m.lightPrevOuts(ctx, "other", src, tx, hints); err != nil {
		t.Fatalf("another buyer: %v", err)
	}
}
