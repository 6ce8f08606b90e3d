package node

import (
	"bytes"
	"testing"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/btcsuite/btcd/wire"
)

// TestChannelFailedFailsContractsAndCountsAgainstBuyer: a seller's channel
// whose funding was double-spent fails the contracts it carried with the
// channel's reason (a contract already final stays so) and is this node's
// evidence against the buyer: a double-spent funding as fraud (it blocks
// the buyer at once), a funding that never confirmed as half a failed
// contract, each with the channel's reason.
// The buyer's side leaves its contracts to its engine and blames nobody.
func TestChannelFailedFailsContractsAndCountsAgainstBuyer(t *testing.T) {
	n := historyNode(t)
	book, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	n.book = book
	m := contract.NewMachine(store.NewContractStore(n.db), contract.Timeouts{}, nil, nil)
	buyer, other := spotPeer(t), spotPeer(t)
	for _, r := range []*contract.Record{
		{ID: "running", Role: contract.RoleSeller, Peer: buyer, State: contract.StateAccepted},
		{ID: "done", Role: contract.RoleSeller, Peer: buyer, State: contract.StateAccepted},
		{ID: "mine", Role: contract.RoleBuyer, Peer: other, State: contract.StateAccepted},
	} {
		if err := m.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		id string
		to contract.State
	}{{"running", contract.StateFunded}, {"running", contract.StateRunning}, {"done", contract.StateExpired}} {
		if _, err := m.Move(contract.RoleSeller, step.id, step.to, "test", nil); err != nil {
			t.Fatal(err)
		}
	}
	before := book.Score(buyer)
	n.channelFailed(&payment.Channel{
		ID: "ab:0", Role: payment.RoleSeller, Peer: buyer.String(), State: payment.StateFailed,
		FailReason: payment.FailDoubleSpent + ": its input is spent by cd",
		Contracts:  map[string]int64{"running": 10, "done": 0},
	})
	r, _ := m.Get(contract.RoleSeller, "running")
	if r.State != contract.StateFailed || r.Why != "payment channel failed: ab:0: funding double-spent: its input is spent by cd" {
		t.Fatalf("running contract %s %q", r.State, r.Why)
	}
	if r, _ := m.Get(contract.RoleSeller, "done"); r.State != contract.StateExpired {
		t.Fatalf("a final contract moved to %s", r.State)
	}
	after := book.Score(buyer)
	if after.Evidence <= before.Evidence || after.Mean >= before.Mean {
		t.Fatalf("buyer's score %+v → %+v: the double-spend is not evidence against it", before, after)
	}
	if after.Sources[0].Outcomes[reputation.OutcomeFundingDoubleSpent.String()] == 0 || after.Sources[0].Bad < 9.9 || !after.Blocked {
		t.Fatalf("double-spend not recorded as fraud: %+v", after)
	}
	if len(after.Notes) != 1 || after.Notes[0].Reason != payment.FailDoubleSpent+": its input is spent by cd" || after.Notes[0].ContractID != "channel:ab:0" {
		t.Fatalf("double-spend's reason: %+v", after.Notes)
	}
	// Never confirmed: lighter evidence (a fee too low, perhaps).
	other2 := spotPeer(t)
	n.channelFailed(&payment.Channel{ID: "ef:0", Role: payment.RoleSeller, Peer: other2.String(), State: payment.StateFailed,
		FailReason: payment.FailNotConfirmed + ": out of the chain for 144 blocks"})
	if s := book.Score(other2); s.Evidence < 0.49 || s.Evidence > 0.51 || s.Blocked || s.Sources[0].Outcomes[reputation.OutcomeFundingUnconfirmed.String()] == 0 ||
		len(s.Notes) != 1 || s.Notes[0].Outcome != "funding_unconfirmed" {
		t.Fatalf("never-confirmed funding: score %+v", s)
	}
	// The buyer's own channel: its engine fails its contract (the next
	// payment is refused with the reason), and nobody is blamed.
	n.channelFailed(&payment.Channel{ID: "gh:0", Role: payment.RoleBuyer, Peer: other.String(), State: payment.StateFailed,
		FailReason: payment.FailNotConfirmed + ": x", Contracts: map[string]int64{"mine": 5}})
	if r, _ := m.Get(contract.RoleBuyer, "mine"); r.State != contract.StateAccepted {
		t.Fatalf("buyer's contract moved under its engine: %s", r.State)
	}
	if s := book.Score(other); s.Evidence != 0 {
		t.Fatalf("the seller was blamed for the buyer's funding: %+v", s)
	}
}

// TestBumpFeesRecorded: a close bumped by a child counts the child's fee
// on top of the close fee, a bigger child replacing it only what it adds,
// and a restart counts nothing again.
func TestBumpFeesRecorded(t *testing.T) {
	n := historyNode(t)
	mem := payment.NewMemStore()
	fs := n.watchFees(mem)
	raw := func(tx *wire.MsgTx) []byte {
		var b bytes.Buffer
		if err := tx.Serialize(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	close := wire.NewMsgTx(2)
	close.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, nil))
	close.AddTxOut(wire.NewTxOut(1000, []byte{0x51}))
	child := func(fee int64) []byte {
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: close.TxHash()}, nil, nil))
		tx.AddTxOut(wire.NewTxOut(1000-fee, []byte{0x51}))
		return raw(tx)
	}
	c := &payment.Channel{ID: "a:0", Role: payment.RoleSeller, State: payment.StateClosing, Capacity: 10_000, CloseFee: 300,
		SpendTx: raw(close), SpendTxid: close.TxHash().String()}
	for _, step := range []struct {
		bump *payment.Bump
		want int64
	}{
		{nil, 300},
		{&payment.Bump{Rate: 2}, 300}, // the clock starts: nothing paid
		{&payment.Bump{Rate: 3, Count: 1, ChildTx: child(200)}, 500}, // the first child
		{&payment.Bump{Rate: 4, Count: 2, ChildTx: child(350)}, 650}, // replaced by a bigger one
	} {
		c.Bump = step.bump
		if err := fs.PutChannel(c); err != nil {
			t.Fatal(err)
		}
		if f := feesToday(t, n); f != step.want {
			t.Fatalf("bump %+v: fees %d, want %d", step.bump, f, step.want)
		}
	}
	fs = n.watchFees(mem)
	if _, err := fs.LoadChannels(); err != nil {
		t.Fatal(err)
	}
	if err := fs.PutChannel(c); err != nil {
		t.Fatal(err)
	}
	if f := feesToday(t, n); f != 650 {
		t.Fatalf("after a restart: fees %d, want 650", f)
	}
}
