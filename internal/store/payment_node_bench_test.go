package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// nodeRecords is what a node records beside a channel update, on its own
// database, as pkg/contract and internal/node do per payment: the buyer its
// contract's Paid/Intervals (Machine.NotePaid) and its job (the job's
// Paid) before it sends the update; the seller its earnings history
// (history.paid) before it acknowledges, and its contract's Paid/Intervals
// after. With sync, each is the commit it was before these records were
// taken off the payment's way: the buyer's job save and Machine.Move, the
// seller's HistoryStore.RecordPayment and Machine.Move, each a bbolt
// commit (two fdatasyncs), and the buyer's write of the update done before
// it sends it (Pay; without sync it sends it while the write runs:
// PayAsync, as contract's buyer pays through a node's Payer).
type nodeRecords struct {
	sync     bool
	machines [2]*contract.Machine
	stores   [2]*store.ContractStore
	history  *store.HistoryStore
	job      []byte // a buyer's job record of a realistic size

	mu        sync.Mutex
	intervals map[int]uint64
}

// benchContract is the contract of channel i's payments.
func benchContract(i int) string { return fmt.Sprintf("c%d", i) }

// withNode makes p's updates record what a node records (see nodeRecords):
// one running contract per channel on each side.
func withNode(b testing.TB, p *boltPair, sync bool) *boltPair {
	b.Helper()
	// As the daemon runs (serve): a scheduler slot for each DB writer
	// blocked in fdatasync. The benchmark's name keeps the -cpu value.
	was := runtime.GOMAXPROCS(0)
	b.Cleanup(func() { runtime.GOMAXPROCS(was) })
	b.Logf("GOMAXPROCS %d (store.RaiseProcs, as serve)", store.RaiseProcs())
	n := &nodeRecords{sync: sync, history: store.NewHistoryStore(p.dbs[1]), intervals: map[int]uint64{}}
	// A signed contract is ~1 KB in a record; a job ~0.5 KB.
	signed := []byte(strings.Repeat("c", 1024))
	n.job, _ = json.Marshal(map[string]any{"id": "job", "state": "running", "paid_sat": 0, "image": strings.Repeat("i", 400)})
	for side, role := range []contract.Role{contract.RoleBuyer, contract.RoleSeller} {
		n.stores[side] = store.NewContractStore(p.dbs[side])
		n.machines[side] = contract.NewMachine(n.stores[side], contract.Timeouts{}, nil, nil)
		for i := range p.ids {
			r := &contract.Record{ID: benchContract(i), Role: role, State: contract.StateRunning, Contract: signed, Job: "job"}
			if err := n.machines[side].Create(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The history has begun (a node's first payment ever is recorded
	// at once: RecordPaymentLater).
	if _, err := n.history.RecordPayment(time.Now(), "before", 1); err != nil {
		b.Fatal(err)
	}
	p.node = n
	return p
}

// update is one payment on channel i as two nodes make it.
func (n *nodeRecords) update(b testing.TB, p *boltPair, i int) {
	ctx := context.Background()
	id := benchContract(i)
	n.mu.Lock()
	n.intervals[i]++
	k := n.intervals[i]
	n.mu.Unlock()
	// The buyer: sign the update and send it; with sync, once persisted
	// and recorded, else while its write runs (Payer.PayAsync, as
	// contract's buyer pays), recording it once durable.
	var u *payment.Update
	var err error
	durable := func() error { return nil }
	if n.sync {
		u, err = p.buyer.Pay(ctx, p.ids[i], id, 1)
	} else {
		u, durable, err = p.buyer.PayAsync(ctx, p.ids[i], id, 1)
	}
	if err != nil {
		b.Error(err)
		return
	}
	paid := u.ContractAmount
	job := func(kv contract.KV) error { return kv.Put("contract_jobs", id, n.job) }
	buyerRecords := func() {
		var err error
		if n.sync {
			if err := n.stores[0].Update(job); err != nil {
				b.Error(err)
			}
			_, err = n.machines[0].Move(contract.RoleBuyer, id, contract.StateRunning, "", func(r *contract.Record) { r.Paid, r.Intervals = paid, k })
		} else {
			n.stores[0].UpdateLater("job/"+id, job)
			err = n.machines[0].NotePaid(contract.RoleBuyer, id, paid, k)
		}
		if err != nil {
			b.Error(err)
		}
	}
	if n.sync {
		buyerRecords()
	}
	// The seller: check and persist the update, record it, acknowledge,
	// record the contract's payment.
	got, err := p.seller.AcceptUpdate(ctx, p.peers[i], u.Encode())
	if err != nil {
		b.Error(err)
		_ = durable()
		return
	}
	if n.sync {
		_, err = n.history.RecordPayment(time.Now(), id, got.ContractAmount)
	} else {
		err = n.history.RecordPaymentLater(time.Now(), id, got.ContractAmount)
	}
	if err != nil {
		b.Error(err)
	}
	// (acknowledged here)
	if n.sync {
		_, err = n.machines[1].Move(contract.RoleSeller, id, contract.StateRunning, "", func(r *contract.Record) { r.Paid, r.Intervals = paid, k })
	} else {
		err = n.machines[1].NotePaid(contract.RoleSeller, id, paid, k)
	}
	if err != nil {
		b.Error(err)
	}
	// The buyer counts the update paid once its own write is done too.
	if !n.sync {
		if err := durable(); err != nil {
			b.Error(err)
			return
		}
		buyerRecords()
	}
}

// BenchmarkPaymentUpdateNode is the channel update as two nodes make it
// (the real store, the channel backup, and what the node records beside
// the channel: nodeRecords), one channel, one update at a time: the
// figure of issue 14 (>= 0.4 of raw btcec sign+verify). It keeps the
// BENCHROW line of bench.sh's table.
func BenchmarkPaymentUpdateNode(b *testing.B) {
	measureUpdates(b, withNode(b, newBoltPair(b, 1, true), false), 1, true)
}

// BenchmarkPaymentUpdateNodeParallel is BenchmarkPaymentUpdateNode with
// parallelChannels channels paying at once (>= 0.5).
func BenchmarkPaymentUpdateNodeParallel(b *testing.B) {
	measureUpdates(b, withNode(b, newBoltPair(b, parallelChannels, true), false), parallelChannels, true)
}

// BenchmarkPaymentUpdateNodeSync is BenchmarkPaymentUpdateNode with the
// node's records committed on the payment's way and the buyer's write
// before its send, as before they were taken off it: the baseline, in the
// same binary.
func BenchmarkPaymentUpdateNodeSync(b *testing.B) {
	measureUpdates(b, withNode(b, newBoltPair(b, 1, true), true), 1, false)
}

// BenchmarkPaymentUpdateNodeParallelSync is the parallel benchmark with
// the records committed on the way.
func BenchmarkPaymentUpdateNodeParallelSync(b *testing.B) {
	measureUpdates(b, withNode(b, newBoltPair(b, parallelChannels, true), true), parallelChannels, false)
}
