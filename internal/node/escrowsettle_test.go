package node

import (
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// TestEscrowPayoutRoles: who earned, spent and paid the fee of each kind of
// escrow payout, as each party records it.
func TestEscrowPayoutRoles(t *testing.T) {
	rec := func(role payment.Role, kind payment.SpendKind, paid payment.EscrowPaid) *payment.EscrowRecord {
		return &payment.EscrowRecord{ID: "ab:0", Role: role, Amount: 4000, SpendKind: kind, SpendTxid: "t", Paid: &paid,
			Market: &payment.EscrowMarket{Contract: "c", ArbiterFee: 1000, FundingFee: 370}}
	}
	release := payment.EscrowPaid{ToSeller: 700, ToBuyer: 2900, Fee: 400}
	split := payment.EscrowPaid{ToSeller: 2000, ToBuyer: 1600, Fee: 400}
	refund := payment.EscrowPaid{ToBuyer: 3600, Fee: 400}
	for _, c := range []struct {
		r                      *payment.EscrowRecord
		earned, fees, spent    int64
		arbiterFee, fundingFee int64
	}{
		{rec(payment.RoleSeller, payment.SpendRelease, release), 1100, 400, 0, 0, 0},
		{rec(payment.RoleBuyer, payment.SpendRelease, release), 0, 0, 1100, 1000, 370},
		{rec(payment.RoleArbiter, payment.SpendRelease, release), 1000, 0, 0, 1000, 0},
		{rec(payment.RoleSeller, payment.SpendPayoutSplit, split), 2000, 0, 0, 0, 0},
		{rec(payment.RoleBuyer, payment.SpendPayoutSplit, split), 0, 400, 2000, 1000, 370},
		{rec(payment.RoleSeller, payment.SpendRefund, refund), 0, 0, 0, 0, 0},
		{rec(payment.RoleBuyer, payment.SpendPayoutBuyer, refund), 0, 400, 0, 1000, 370},
	} {
		p := escrowPayout(c.r, time.Now())
		if p.Earned != c.earned || p.FeesPaid != c.fees || p.Spent != c.spent || p.ArbiterFee != c.arbiterFee || p.FundingFee != c.fundingFee {
			t.Fatalf("%s of a %s: %+v", c.r.Role, c.r.SpendKind, p)
		}
	}
}

// TestEscrowNeeds: the delay an escrow needs grows with the job, one block
// per ten minutes, beyond the confirmations and six blocks to release.
func TestEscrowNeeds(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		conf int32
		want int32
	}{{time.Minute, 1, 8}, {10 * time.Minute, 3, 10}, {10*time.Minute + time.Second, 3, 11}, {24 * time.Hour, 3, 153}} {
		if got := escrowNeeds(c.d, c.conf); got != c.want {
			t.Fatalf("%s, %d confirmations: %d, want %d", c.d, c.conf, got, c.want)
		}
	}
	cfg := DefaultArbiterConfig()
	for _, bad := range [][2]int32{{0, 1008}, {5, 1008}, {144, 100}, {144, 20000}} {
		cfg.Delay, cfg.MaxDelay = bad[0], bad[1]
		if cfg.Validate() == nil {
			t.Fatalf("arbiter.delay %d, max_delay %d accepted", bad[0], bad[1])
		}
	}
}

// TestEscrowDelayFor: the buyer funds with the longest of the arbiter's
// delay, its own and the job's need, and refuses before funding a delay
// beyond its own, the arbiter's or the seller's max.
func TestEscrowDelayFor(t *testing.T) {
	n := &Node{cfg: Config{Arbiter: DefaultArbiterConfig()}, payCfg: payment.Config{Confirmations: 3}}
	e := &escrowNode{n: n}
	p := &contract.Proposal{Request: contract.Request{Duration: time.Hour}}
	ao := &contract.ArbiterOffer{Delay: 20, MaxDelay: 500}
	st := &contract.SellerEscrowTerms{MaxDelay: 300}
	if d, err := e.delayFor(p, ao, st); err != nil || d != 144 {
		t.Fatalf("delay %d, %v; want this node's 144", d, err)
	}
	ao.Delay = 200
	if d, err := e.delayFor(p, ao, st); err != nil || d != 200 {
		t.Fatalf("delay %d, %v; want the arbiter's 200", d, err)
	}
	p.Request.Duration = 50 * time.Hour // 300 blocks + 3 + 6
	if _, err := e.delayFor(p, ao, st); err == nil || !strings.Contains(err.Error(), "the seller's max delay of 300") {
		t.Fatalf("a job longer than the seller's max delay: %v", err)
	}
	st.MaxDelay, p.Request.Duration = 0, 100*time.Hour // 600 blocks + 9
	if _, err := e.delayFor(p, ao, st); err == nil || !strings.Contains(err.Error(), "the arbiter's max delay of 500") {
		t.Fatalf("a delay beyond the arbiter's max: %v", err)
	}
	ao.MaxDelay, n.cfg.Arbiter.MaxDelay = 5000, 250
	if _, err := e.delayFor(p, ao, st); err == nil || !strings.Contains(err.Error(), "arbiter.max_delay of 250") {
		t.Fatalf("a delay beyond this node's max: %v", err)
	}
}
