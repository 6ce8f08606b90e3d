package payment

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// TestExposure: what a seller would lose to double-spends is what its
// unconfirmed, zero-conf channels carry plus what the contracts admitted
// on them may still be paid; confirmed channels, buyer channels and
// fundings that were not accepted unconfirmed count nothing.
func TestExposure(t *testing.T) {
	ch := func(id string, role Role, st State, zc bool, paid int64, per map[string]int64) *Channel {
		return &Channel{ID: id, Role: role, State: st, ZeroConf: zc, Paid: paid, Contracts: per}
	}
	for _, tc := range []struct {
		name  string
		chans []*Channel
		res   map[string]reservation
		want  int64
	}{
		{"nothing", nil, nil, 0},
		{"paid on one", []*Channel{ch("a", RoleSeller, StatePending, true, 300, map[string]int64{"c1": 300})}, nil, 300},
		{"reserved, nothing paid yet",
			[]*Channel{ch("a", RoleSeller, StatePending, true, 0, nil)},
			map[string]reservation{"c1": {"a", 1000}}, 1000},
		{"reserved and partly paid: the reservation",
			[]*Channel{ch("a", RoleSeller, StatePending, true, 400, map[string]int64{"c1": 400})},
			map[string]reservation{"c1": {"a", 1000}}, 1000},
		{"paid beyond the reservation (the bill): what was paid",
			[]*Channel{ch("a", RoleSeller, StatePending, true, 1200, map[string]int64{"c1": 1200})},
			map[string]reservation{"c1": {"a", 1000}}, 1200},
		{"a released contract's payment stays",
			[]*Channel{ch("a", RoleSeller, StatePending, true, 700, map[string]int64{"c1": 700})},
			map[string]reservation{}, 700},
		{"two contracts on a channel, one on another",
			[]*Channel{
				ch("a", RoleSeller, StatePending, true, 100, map[string]int64{"c1": 100}),
				ch("b", RoleSeller, StatePending, true, 50, map[string]int64{"c3": 50}),
			},
			map[string]reservation{"c1": {"a", 500}, "c2": {"a", 300}, "c3": {"b", 50}}, 500 + 300 + 50},
		{"confirmed, buyer's and checked-out fundings count nothing",
			[]*Channel{
				ch("a", RoleSeller, StateOpen, true, 900, map[string]int64{"c1": 900}),
				ch("b", RoleBuyer, StatePending, false, 900, map[string]int64{"c2": 900}),
				ch("c", RoleSeller, StatePending, false, 900, map[string]int64{"c3": 900}),
				ch("d", RoleSeller, StateClosing, true, 900, nil),
			},
			map[string]reservation{"c1": {"a", 5000}, "c3": {"c", 5000}}, 0},
	} {
		if got := Exposure(tc.chans, tc.res); got != tc.want {
			t.Errorf("%s: exposure %d, want %d", tc.name, got, tc.want)
		}
	}
}

// zcPair is a buyer and a seller on the in-memory chain with a channel
// whose funding is not mined, accepted by the seller as zero-conf (the
// in-memory chain's coins are imaginary, so the checks are not run here:
// TestZeroConfRegtest runs them).
func zcPair(t *testing.T, max int64) (*paytest.Chain, *Manager, *Manager, string) {
	t.Helper()
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
	cfg.ZeroConfMax = max
	chain := paytest.NewChain()
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain))
	seller := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	ctx := context.Background()
	terms, err := seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 1_000_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := seller.AcceptOpen(ctx, "b", req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if sc.ZeroConf || sc.ZeroConfWhy == "" {
		t.Fatalf("the in-memory chain has no view of inputs: zero_conf %v, why %q", sc.ZeroConf, sc.ZeroConfWhy)
	}
	cs, cur := seller.chans.lock(c.ID)
	next := cur.clone()
	next.ZeroConf, next.ZeroConfWhy = true, ""
	if err := seller.persist(cs, next); err != nil {
		t.Fatal(err)
	}
	cs.mu.Unlock()
	return chain, buyer, seller, c.ID
}

// TestAdmitWithinExposure: on an unconfirmed funding the seller admits
// contracts while its exposure stays within zero_conf_max, refuses to
// start one that would exceed it (it waits for the confirmations), takes
// payments on the unconfirmed channel only within the bound, and once the
// funding confirms admits anything.
func TestAdmitWithinExposure(t *testing.T) {
	chain, buyer, seller, id := zcPair(t, 1000)
	ctx := context.Background()
	st, err := seller.Admit(ctx, id, "c1", 600)
	if err != nil || !st.Ready || !st.ZeroConf || st.Exposure != 600 || st.Max != 1000 || st.Needed != 3 || st.Confirmations != 0 {
		t.Fatalf("admit c1: %+v %v", st, err)
	}
	if again, err := seller.Admit(ctx, id, "c1", 600); err != nil || !again.Ready || again.Exposure != 600 {
		t.Fatalf("admit c1 again: %+v %v", again, err)
	}
	st, err = seller.Admit(ctx, id, "c2", 500)
	if err != nil || st.Ready || !strings.Contains(st.Why, "zero_conf_max") || st.Exposure != 600 {
		t.Fatalf("admit c2 over the bound: %+v %v", st, err)
	}
	// The buyer pays on its unconfirmed funding; the seller takes it
	// within the bound (the reservation already counts it)…
	pay := func(contract string, amount int64) error {
		u, err := buyer.Pay(ctx, id, contract, amount)
		if err != nil {
			t.Fatal(err)
		}
		_, err = seller.AcceptUpdate(ctx, "b", u.Encode())
		return err
	}
	if err := pay("c1", 600); err != nil {
		t.Fatalf("pay c1 600 on the unconfirmed channel: %v", err)
	}
	if e := seller.ZeroConf().ExposureSat; e != 600 {
		t.Fatalf("exposure %d after c1 paid its reservation, want 600", e)
	}
	// …and beyond the reservation (a bill for bytes) up to the bound…
	if err := pay("c1", 400); err != nil {
		t.Fatalf("pay c1 to 1000: %v", err)
	}
	// …but not past it.
	if err := pay("c1", 1); !errors.Is(err, ErrNotOpen) || !strings.Contains(err.Error(), "zero_conf_max") {
		t.Fatalf("pay c1 past the bound: %v, want ErrNotOpen naming zero_conf_max", err)
	}
	// Released, c1's payments still count until the funding confirms.
	seller.Release("c1")
	if v := seller.ZeroConf(); v.ExposureSat != 1000 || len(v.Channels) != 1 || v.Channels[0].PaidSat != 1000 {
		t.Fatalf("after release: %+v", v)
	}
	if st, _ := seller.Admit(ctx, id, "c2", 500); st.Ready {
		t.Fatalf("c2 admitted at the bound: %+v", st)
	}
	// Confirmed: the channel opens, exposure is gone, c2 starts.
	chain.Mine(3)
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = seller.Admit(ctx, id, "c2", 500)
	if err != nil || !st.Ready || st.ZeroConf || st.Confirmations != 3 {
		t.Fatalf("admit c2 after the confirmations: %+v %v", st, err)
	}
	if v := seller.ZeroConf(); v.ExposureSat != 0 || len(v.Channels) != 0 {
		t.Fatalf("exposure after the confirmations: %+v", v)
	}
}

// TestZeroConfOff: with zero_conf_max 0 nothing is admitted unconfirmed
// and no update is taken on an unconfirmed channel.
func TestZeroConfOff(t *testing.T) {
	_, buyer, seller, id := zcPair(t, 0)
	ctx := context.Background()
	st, err := seller.Admit(ctx, id, "c1", 1)
	if err != nil || st.Ready {
		t.Fatalf("admit with zero_conf_max 0: %+v %v", st, err)
	}
	u, err := buyer.Pay(ctx, id, "c1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("update on an unconfirmed channel with zero_conf_max 0: %v", err)
	}
}

// TestCheckNoRBF: a funding that signals replacement (BIP 125) is not
// worked on unconfirmed.
func TestCheckNoRBF(t *testing.T) {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 0}, nil, nil))
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil))
	if err := checkNoRBF(tx); err != nil {
		t.Fatalf("final sequences: %v", err)
	}
	tx.TxIn[1].Sequence = wire.MaxTxInSequenceNum - 1 // locktime, no RBF
	if err := checkNoRBF(tx); err != nil {
		t.Fatalf("0xfffffffe: %v", err)
	}
	tx.TxIn[1].Sequence = wire.MaxTxInSequenceNum - 2
	if err := checkNoRBF(tx); !errors.Is(err, ErrNotZeroConf) || !strings.Contains(err.Error(), "input 1") {
		t.Fatalf("0xfffffffd: %v", err)
	}
}

// TestBlockClock: the next block is expected one mean interval (of the
// arrivals seen) after the last, at least a tenth of it from now; before
// two arrivals were seen, the block timestamps' interval, else the
// network's spacing; the first tip seen, a reorg or a jump is no arrival.
func TestBlockClock(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	def := 10 * time.Minute
	var b blockClock
	if got := b.next(t0, def); got != def {
		t.Fatalf("nothing seen: %s", got)
	}
	b.observe(100, t0) // at start: not an arrival
	if got := b.next(t0.Add(time.Minute), def); got != def {
		t.Fatalf("only the start's tip seen: %s, want the default", got)
	}
	b.headerTip, b.headerIv, b.headerLast = 100, 8*time.Minute, t0.Add(-2*time.Minute)
	if got := b.next(t0, def); got != 6*time.Minute {
		t.Fatalf("from the headers (every 8m, the last 2m ago): %s, want 6m", got)
	}
	b.observe(101, t0.Add(4*time.Minute))
	if got := b.next(t0.Add(5*time.Minute), def); got != 10*time.Minute-time.Minute {
		t.Fatalf("one arrival, stale headers: %s, want the default less a minute", got)
	}
	b.observe(102, t0.Add(9*time.Minute))
	if got := b.next(t0.Add(10*time.Minute), def); got != 4*time.Minute {
		t.Fatalf("arrivals 5m apart, the last a minute ago: %s, want 4m", got)
	}
	if got := b.next(t0.Add(60*time.Minute), def); got != 30*time.Second {
		t.Fatalf("long overdue: %s, want a tenth of the interval", got)
	}
	b.observe(102, t0.Add(11*time.Minute)) // the same tip again
	if iv, _ := b.estimate(def); iv != 5*time.Minute {
		t.Fatalf("same tip counted: %s", iv)
	}
	b.observe(99, t0.Add(12*time.Minute)) // reorg
	if iv, _ := b.estimate(def); iv != def {
		t.Fatalf("after a reorg: %s, want the default", iv)
	}
	for i := range 20 {
		b.observe(100+int32(i), t0.Add(time.Duration(i)*time.Second))
	}
	if iv, _ := b.estimate(def); len(b.seen) != blockSamples+1 || iv != time.Second {
		t.Fatalf("%d samples, interval %s", len(b.seen), iv)
	}
}
