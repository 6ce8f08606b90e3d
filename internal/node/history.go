package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/btcsuite/btcd/wire"
)

// This file keeps the seller's history (internal/store's HistoryStore):
// the hooks the node calls at each event, the periodic capacity sample, the
// market's median price, and the Earnings view built from them.

// Intervals of the history's background work.
const (
	// Capacity is sampled this often in memory and written once per
	// bucket (and at shutdown): a crash loses at most one bucket's samples.
	historySampleEvery = 5 * time.Second
	historyPruneEvery  = time.Hour
	// marketEvery is how often the market's median price is looked up again;
	// Earnings answers from the last look-up, never from the network.
	marketEvery   = 5 * time.Minute
	marketRetry   = 20 * time.Second
	marketTimeout = 30 * time.Second
)

// history is the node's recorder. Its methods are safe for concurrent use
// and never fail the event they record: an error is logged.
type history struct {
	n  *Node
	st *store.HistoryStore

	mu       sync.Mutex
	refusals map[contract.Reason]uint64 // the seller's counters at the last sample
	market   marketPrice
	// acc sums the capacity samples of the bucket starting at accAt, not
	// yet written.
	acc   store.CapacitySample
	accN  int64
	accAt time.Time
}

// marketPrice is the last look-up of the market's prices for this node's
// own offered resources.
type marketPrice struct {
	median float64 // sat/h; 0 when no other offer was found
	offers int
	basis  offer.Resources
}

func newHistory(n *Node) *history {
	return &history{n: n, st: store.NewHistoryStore(n.db)}
}

func (h *history) warn(err error) {
	if err != nil {
		h.n.log.Warn("history", "err", err)
	}
}

// paid records what the seller acknowledged for a contract (cumulative).
// The record reaches the disk a moment later, off the acknowledgement's
// way (store.HistoryStore.RecordPaymentLater): the channel update is
// durable, and reconcile rebuilds the record from it after a crash.
func (h *history) paid(contractID string, cumulative int64) {
	h.warn(h.st.RecordPaymentLater(time.Now(), contractID, cumulative))
}

// moved records a seller contract's move: a job that starts, and each
// contract's outcome once (the first move out of the states before it).
func (h *history) moved(r *contract.Record, from contract.State) {
	now := time.Now()
	if r.State == contract.StateRunning {
		h.warn(h.st.RecordJob(now))
	}
	early := from == contract.StateProposed || from == contract.StateAccepted || from == contract.StateFunded || from == contract.StateRunning
	if early && !r.State.Holds() || r.State == contract.StateDisputed {
		h.warn(h.st.RecordOutcome(now, r.ID, r.State.String()))
	}
}

// hookSeller chains the history onto the seller's state machine (before
// Start, so the moves of Recover count too).
func (n *Node) hookSeller(s *contract.Seller) {
	m := s.Machine()
	prev := m.OnMove
	m.OnMove = func(r *contract.Record, from contract.State) {
		if prev != nil {
			prev(r, from)
		}
		n.history.moved(r, from)
	}
}

// feeStore watches the channel records the payment manager persists for the
// fees this node pays: a seller's close (its close fee) and a buyer's
// refund (what the spend leaves out).
type feeStore struct {
	payment.ChannelStore
	h *history

	mu    sync.Mutex
	state map[string]payment.State
	// paid is what the spend of a closing channel has cost so far, fee
	// bumps included (payment/bump.go): a bump records what it adds.
	paid map[string]int64
}

func (n *Node) watchFees(st payment.ChannelStore) payment.ChannelStore {
	return &feeStore{ChannelStore: st, h: n.history, state: map[string]payment.State{}, paid: map[string]int64{}}
}

// spendCost is what c's spend costs this node: its fee and the latest
// bump's child.
func spendCost(c *payment.Channel) int64 { return c.SpendFee() + c.BumpFee() }

// Counters implements payment.CounterStore when the wrapped store does.
func (f *feeStore) Counters() (map[string]uint32, error) {
	cs, ok := f.ChannelStore.(payment.CounterStore)
	if !ok {
		return nil, errors.New("the payment store lists no counters")
	}
	return cs.Counters()
}

// RaiseIndex implements payment.CounterStore when the wrapped store does.
func (f *feeStore) RaiseIndex(name string, next uint32) error {
	cs, ok := f.ChannelStore.(payment.CounterStore)
	if !ok {
		return errors.New("the payment store raises no counters")
	}
	return cs.RaiseIndex(name, next)
}

func (f *feeStore) LoadChannels() ([]*payment.Channel, error) {
	cs, err := f.ChannelStore.LoadChannels()
	f.mu.Lock()
	for _, c := range cs {
		f.state[c.ID] = c.State
		f.paid[c.ID] = spendCost(c)
	}
	f.mu.Unlock()
	return cs, err
}

func (f *feeStore) PutChannel(c *payment.Channel) error {
	if err := f.ChannelStore.PutChannel(c); err != nil {
		return err
	}
	f.noted(c)
	return nil
}

// noted records the fee of a written channel change, if it has one.
func (f *feeStore) noted(c *payment.Channel) {
	f.mu.Lock()
	prev, seen := f.state[c.ID]
	f.state[c.ID] = c.State
	cost, before := spendCost(c), f.paid[c.ID]
	first := c.State == payment.StateClosing && (!seen || prev != payment.StateClosing) && len(c.SpendTx) > 0
	bumped := c.State == payment.StateClosing && !first && c.Bump != nil && cost > before
	if first || bumped {
		f.paid[c.ID] = cost
	}
	f.mu.Unlock()
	if first {
		f.h.warn(f.h.st.RecordFee(time.Now(), c.SpendFee()))
	}
	if bumped {
		f.h.warn(f.h.st.RecordFee(time.Now(), cost-before))
	}
}

// feeFunder records the fee of each funding transaction this node
// publishes (the buyer's channel opens).
type feeFunder struct {
	payment.Funder
	h *history

	mu   sync.Mutex
	fees map[string]int64 // by txid, between FundTx and PublishTx
}

func (n *Node) watchFunding(f payment.Funder) payment.Funder {
	return &feeFunder{Funder: f, h: n.history, fees: map[string]int64{}}
}

func (f *feeFunder) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	tx, err := f.Funder.FundTx(ctx, outs, feeRate)
	if err == nil {
		// The wallet pays about feeRate per vbyte (it rounds per kvB).
		f.mu.Lock()
		f.fees[tx.TxHash().String()] = feeRate * payment.VSize(tx)
		f.mu.Unlock()
	}
	return tx, err
}

func (f *feeFunder) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	if err := f.Funder.PublishTx(ctx, tx); err != nil {
		return err
	}
	id := tx.TxHash().String()
	f.mu.Lock()
	fee, ok := f.fees[id]
	delete(f.fees, id)
	f.mu.Unlock()
	if ok {
		f.h.warn(f.h.st.RecordFee(time.Now(), fee))
	}
	return nil
}

// run samples capacity and refusals every historySampleEvery and prunes
// what is older than store.HistoryKeep every hour; beside it, a seller
// looks up the market's median price every marketEvery. At the end it
// writes the samples not yet written.
func (h *history) run(ctx context.Context) {
	sample := time.NewTicker(historySampleEvery)
	defer sample.Stop()
	defer h.flush(time.Time{})
	if h.n.seller != nil {
		done := make(chan struct{})
		go func() { defer close(done); h.watchMarket(ctx) }()
		defer func() { <-done }()
	}
	h.reconcile()
	var lastPrune time.Time
	for {
		now := time.Now()
		if now.Sub(lastPrune) >= historyPruneEvery {
			lastPrune = now
			if n, err := h.st.Prune(now.Add(-store.HistoryKeep)); err != nil {
				h.warn(err)
			} else if n > 0 {
				h.n.log.Info("history pruned", "records", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			h.sample(time.Now())
		}
	}
}

// reconcile records what the seller's open channels hold for a contract
// beyond what the history has: a payment persisted by the channel store
// just before a crash that came before the history's record of it (the
// seller had not acknowledged it yet, but the buyer's signature is money).
// Contracts from before the history began are left alone.
func (h *history) reconcile() {
	if h.n.payments == nil || h.n.seller == nil {
		return
	}
	created := func(id string) time.Time {
		r, err := h.n.seller.Machine().Get(contract.RoleSeller, id)
		if err != nil || len(r.History) == 0 {
			return time.Time{}
		}
		return r.History[0].At
	}
	n, err := h.catchUp(time.Now(), h.n.payments.Channels(), created)
	h.warn(err)
	if n > 0 {
		h.n.log.Info("history: payments recorded after a restart", "sats", n)
	}
}

// catchUp records at now, for every contract paid through an open seller
// channel of chans, what the channel holds beyond the history's record of
// it; a contract the history has no record of counts only if it was
// created (created(id)) after the history began. It returns the sats added.
func (h *history) catchUp(now time.Time, chans []*payment.Channel, created func(id string) time.Time) (int64, error) {
	oldest, ok, err := h.st.Oldest()
	if err != nil || !ok {
		return 0, err
	}
	split, err := h.split(chans)
	if err != nil {
		return 0, err
	}
	// A contract in two channels: the larger amount, as the payments
	// recorded it (each update carries its channel's total).
	held := map[string]int64{}
	for _, c := range split.open {
		for id, amount := range c.Contracts {
			held[id] = max(held[id], amount)
		}
	}
	return h.st.CatchUp(now, held, func(id string) bool { return !created(id).Before(oldest) })
}

// sample takes what is spare, sold and reserved now (written once its
// bucket is over) and records the proposals the seller refused since the
// last sample.
func (h *history) sample(now time.Time) {
	snap := h.n.meter.Snapshot()
	if !snap.Measured.At.IsZero() {
		spare := snap.Spare
		if h.n.seller == nil {
			spare = meter.Capacity{}
		}
		res := h.n.meter.Policy().Reserve
		total := snap.Measured.Total
		h.flush(store.BucketStart(now))
		h.mu.Lock()
		h.acc.Add(store.CapacitySample{
			SpareMilliCPU: spare.MilliCPU, SoldMilliCPU: snap.Held.MilliCPU, ResMilliCPU: min(res.MilliCPU, total.MilliCPU),
			SpareMemory: spare.Memory, SoldMemory: snap.Held.Memory, ResMemory: min(res.Memory, total.Memory),
		})
		h.accN++
		h.accAt = store.BucketStart(now)
		h.mu.Unlock()
	}
	if h.n.seller == nil {
		return
	}
	cur := h.n.seller.Rejections()
	h.mu.Lock()
	diff := map[string]int64{}
	for r, c := range cur {
		if d := int64(c) - int64(h.refusals[r]); d > 0 {
			diff[string(r)] = d
		}
	}
	h.refusals = cur
	h.mu.Unlock()
	h.warn(h.st.RecordRefusals(now, diff))
}

// flush writes the samples taken in a bucket other than current (zero:
// whatever bucket they are in).
func (h *history) flush(current time.Time) {
	h.mu.Lock()
	if h.accN == 0 || h.accAt.Equal(current) {
		h.mu.Unlock()
		return
	}
	acc, n, at := h.acc, h.accN, h.accAt
	h.acc, h.accN = store.CapacitySample{}, 0
	h.mu.Unlock()
	h.warn(h.st.RecordCapacity(at, acc, n))
}

// unwritten adds the samples not yet written to buckets (oldest first).
func (h *history) unwritten(buckets []store.HistoryBucket) []store.HistoryBucket {
	h.mu.Lock()
	acc, n, at := h.acc, h.accN, h.accAt
	h.mu.Unlock()
	if n == 0 {
		return buckets
	}
	i, found := slices.BinarySearchFunc(buckets, at, func(b store.HistoryBucket, t time.Time) int { return b.Start.Compare(t) })
	if !found {
		buckets = slices.Insert(buckets, i, store.HistoryBucket{Start: at})
	}
	b := &buckets[i]
	b.Samples += n
	b.SpareMilliCPU, b.SoldMilliCPU, b.ResMilliCPU = b.SpareMilliCPU+acc.SpareMilliCPU, b.SoldMilliCPU+acc.SoldMilliCPU, b.ResMilliCPU+acc.ResMilliCPU
	b.SpareMemory, b.SoldMemory, b.ResMemory = b.SpareMemory+acc.SpareMemory, b.SoldMemory+acc.SoldMemory, b.ResMemory+acc.ResMemory
	return buckets
}

// watchMarket looks up the market's prices until ctx ends.
func (h *history) watchMarket(ctx context.Context) {
	for {
		h.lookUpMarket(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.marketDue()):
		}
	}
}

// marketDue is how long after a look-up of the market the next is due:
// soon while none found another offer (a node that just started knows few
// peers), marketEvery after.
func (h *history) marketDue() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.market.offers == 0 {
		return marketRetry
	}
	return marketEvery
}

// lookUpMarket finds the offers on the market and keeps the median hourly
// price, at each seller's prices, of this node's own offered resources.
func (h *history) lookUpMarket(ctx context.Context) {
	basis := h.basis()
	ctx, cancel := context.WithTimeout(ctx, marketTimeout)
	defer cancel()
	found, err := h.n.disc.Find(ctx, offer.Filter{})
	if ctx.Err() != nil && len(found) == 0 {
		return // stopping, or the market did not answer: keep what was known
	}
	if err != nil {
		h.n.log.Debug("market look-up for the history", "err", err)
	}
	mp := marketPrice{basis: basis}
	var prices []float64
	for _, o := range found {
		if o.Seller == h.n.host.ID() {
			continue
		}
		prices = append(prices, o.HourlyCost(basis))
	}
	mp.offers = len(prices)
	mp.median = median(prices)
	h.mu.Lock()
	h.market = mp
	h.mu.Unlock()
}

// basis is what the node offers now, or one core and 1 GiB when it offers
// nothing (the market's price is then for that).
func (h *history) basis() offer.Resources {
	if h.n.pub != nil {
		if o, _ := h.n.pub.Current(); o != nil && o.Resources.CPUMillis > 0 {
			return offer.Resources{CPUMillis: o.Resources.CPUMillis, MemoryBytes: o.Resources.MemoryBytes, DiskBytes: o.Resources.DiskBytes}
		}
	}
	return offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Earnings implements api.Backend: the totals of the last 24 h, 7 d and
// 30 d, the buckets since now-since (0: 24 h), the channels' close cost, the
// market's median and why there was no work. It reads the store and memory
// only.
func (n *Node) Earnings(ctx context.Context, since time.Duration) (api.Earnings, error) {
	var chans []*payment.Channel
	if n.payments != nil {
		chans = n.payments.Channels()
	}
	e, buckets, err := n.history.earnings(since, chans)
	if err != nil {
		return e, err
	}
	n.history.mu.Lock()
	mp := n.history.market
	n.history.mu.Unlock()
	e.MarketMedianPerHour = mp.median
	if mp.basis.CPUMillis == 0 {
		mp.basis = n.history.basis()
	}
	if n.pub != nil { // nil only in benchmarks of a node not started
		if o, _ := n.pub.Current(); o != nil {
			e.OwnPerHour = o.HourlyCost(mp.basis)
		}
	}
	if mp.median > 0 && mp.basis.CPUMillis > 0 {
		var soldMilliHours float64
		for _, b := range buckets {
			if !b.Start.Before(e.Since) && b.Samples > 0 {
				soldMilliHours += float64(b.SoldMilliCPU) / float64(b.Samples) * store.HistoryStep.Hours()
			}
		}
		e.AtMedianSat = int64(math.Round(soldMilliHours / float64(mp.basis.CPUMillis) * mp.median))
	}
	e.NoWork = n.noWork(e, mp)
	return e, nil
}

// StoredEarnings is Earnings read from a database no daemon holds (for the
// CLI while the node is stopped): the history and the channels as stored,
// no market price, and the one reason there is no work now.
func StoredEarnings(db *store.DB, since time.Duration) (api.Earnings, error) {
	chans, err := store.NewPaymentStore(db).LoadChannels()
	if err != nil {
		return api.Earnings{}, err
	}
	h := &history{st: store.NewHistoryStore(db)}
	e, _, err := h.earnings(since, chans)
	e.NoWork = []api.NoWorkReason{{Code: "daemon", Detail: "the node is not running: nothing is on offer",
		Fix: "start it with `blackbox serve` (or the blackbox service)"}}
	return e, err
}

// earnings sums the history since now-since (0: 24 h; at most what is
// kept) and the standard windows, splitting what was earned by where it is
// now in chans (the node's channels), and returns the buckets read.
func (h *history) earnings(since time.Duration, chans []*payment.Channel) (api.Earnings, []store.HistoryBucket, error) {
	if since <= 0 {
		since = 24 * time.Hour
	}
	since = min(since, store.HistoryKeep)
	now := time.Now().UTC()
	e := api.Earnings{Now: now, Since: now.Add(-since), BucketSeconds: int64(store.HistoryStep / time.Second)}
	oldest := now.Add(-max(since, 30*24*time.Hour))
	buckets, err := h.st.Buckets(oldest, now.Add(store.HistoryStep))
	if err != nil {
		return e, nil, err
	}
	buckets = h.unwritten(buckets)
	split, err := h.split(chans)
	if err != nil {
		return e, nil, err
	}
	e.Today = totals(buckets, split, now.Add(-24*time.Hour))
	e.Week = totals(buckets, split, now.Add(-7*24*time.Hour))
	e.Month = totals(buckets, split, now.Add(-30*24*time.Hour))
	e.Period = totals(buckets, split, e.Since)
	e.Buckets, e.BucketSeconds = coarsen(buckets, e.Since, since)
	e.Holdings = payment.Hold(chans)
	e.InChannelsSat, e.CloseFeeSat, e.AfterCloseSat = e.Holdings.InChannels, e.Holdings.CloseFee, e.Holdings.AfterClose
	if e.Escrow, err = escrowEarnings(h.st, e.Since); err != nil {
		return e, nil, err
	}
	return e, buckets, nil
}

// earned is where the money earned in a window is now: per contract still
// running (pending) or in a channel not yet closed on chain.
type earned struct {
	open    []*payment.Channel // the seller's channels not closed on chain
	history map[string]*store.ContractHistory
	inOpen  map[string]bool // contracts paid through an open channel
}

// split finds the seller's channels in chans not closed on chain and the
// payment history of the contracts paid through them.
func (h *history) split(chans []*payment.Channel) (earned, error) {
	s := earned{inOpen: map[string]bool{}}
	var ids []string
	for _, c := range chans {
		if c.Role != payment.RoleSeller || c.State == payment.StateClosed || c.State == payment.StateFailed {
			continue
		}
		s.open = append(s.open, c)
		for id := range c.Contracts {
			ids = append(ids, id)
			s.inOpen[id] = true
		}
	}
	var err error
	s.history, err = h.st.Contracts(ids)
	return s, err
}

// totals sums the buckets that start at or after from. What was earned is
// split: pending (contract still running), in open channels (contract
// ended, channel not closed on chain) and settled (the rest).
func totals(buckets []store.HistoryBucket, s earned, from time.Time) api.EarningsTotals {
	t := api.EarningsTotals{Contracts: map[string]int64{}, Refusals: map[string]int64{}}
	from = store.BucketStart(from)
	var earnedSat, sold, offered int64
	for _, b := range buckets {
		if b.Start.Before(from) {
			continue
		}
		earnedSat += b.EarnedSat
		t.FeesSat += b.FeesSat
		t.Jobs += b.Jobs
		sold += b.SoldMilliCPU
		offered += b.SoldMilliCPU + b.SpareMilliCPU
		for k, v := range b.Contracts {
			t.Contracts[k] += v
		}
		for k, v := range b.Refusals {
			t.Refusals[k] += v
		}
	}
	for id, c := range s.history {
		if !s.inOpen[id] {
			continue
		}
		for _, p := range c.Points {
			if p.Start.Before(from) {
				continue
			}
			if c.Ended {
				t.ChannelSat += p.Sat
			} else {
				t.PendingSat += p.Sat
			}
		}
	}
	// History recorded before a restart that lost a contract's record
	// can make the split exceed the total; the total wins.
	t.PendingSat = min(t.PendingSat, earnedSat)
	t.ChannelSat = min(t.ChannelSat, earnedSat-t.PendingSat)
	t.SettledSat = earnedSat - t.PendingSat - t.ChannelSat
	t.EarnedSat = earnedSat
	t.NetSat = earnedSat - t.FeesSat
	if offered > 0 {
		t.Busy = float64(sold) / float64(offered)
	}
	return t
}

// coarsen returns the buckets from since on, merged into wider ones when
// the period is long (at most about 300 rows), and the width in seconds.
func coarsen(buckets []store.HistoryBucket, since time.Time, period time.Duration) ([]api.EarningsBucket, int64) {
	width := store.HistoryStep
	for _, w := range []time.Duration{15 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour} {
		if period/width <= 300 {
			break
		}
		width = w
	}
	out := []api.EarningsBucket{}
	type sums struct{ samples, sc, so, rc, sm, som, rm int64 }
	var acc sums
	flush := func() {
		if len(out) == 0 {
			return
		}
		b := &out[len(out)-1]
		if acc.samples > 0 {
			b.SpareMilliCPU, b.SoldMilliCPU, b.ReservedMilliCPU = acc.sc/acc.samples, acc.so/acc.samples, acc.rc/acc.samples
			b.SpareMemory, b.SoldMemory, b.ReservedMemory = acc.sm/acc.samples, acc.som/acc.samples, acc.rm/acc.samples
		}
		acc = sums{}
	}
	for _, b := range buckets {
		if b.Start.Before(store.BucketStart(since)) {
			continue
		}
		start := b.Start.Truncate(width)
		if len(out) == 0 || !out[len(out)-1].Start.Equal(start) {
			flush()
			out = append(out, api.EarningsBucket{Start: start})
		}
		o := &out[len(out)-1]
		o.EarnedSat += b.EarnedSat
		o.FeesSat += b.FeesSat
		o.Jobs += b.Jobs
		o.Contracts = addCounts(o.Contracts, b.Contracts)
		o.Refusals = addCounts(o.Refusals, b.Refusals)
		acc.samples += b.Samples
		acc.sc, acc.so, acc.rc = acc.sc+b.SpareMilliCPU, acc.so+b.SoldMilliCPU, acc.rc+b.ResMilliCPU
		acc.sm, acc.som, acc.rm = acc.sm+b.SpareMemory, acc.som+b.SoldMemory, acc.rm+b.ResMemory
	}
	flush()
	return out, int64(width / time.Second)
}

func addCounts(into, from map[string]int64) map[string]int64 {
	if len(from) == 0 {
		return into
	}
	if into == nil {
		into = map[string]int64{}
	}
	for k, v := range from {
		into[k] += v
	}
	return into
}

// idleFacts are what noWorkReasons judges.
type idleFacts struct {
	paymentsOff string // why payments are off ("" when on)
	sandboxOff  string // why the sandbox cannot run jobs ("" when it can)
	selling     bool
	measured    bool
	spareCPU    int64
	meterReason string
	own, median float64 // sat/h for the same resources; median 0: unknown
	offers      int
	// reputation as this node's book sees itself through its peers'
	// attestations
	repKnown         bool
	repBlocked       bool
	repMean, repEvid float64
	repThreshold     float64
	repWhy           string
	// reach is the node's reachability state (StateUnknown, …);
	// listenKnown says the host is up to know it.
	reach       string
	listenKnown bool
	// unreachable is how many accepted contracts buyers gave up in the
	// last 30 days, having no connection to this node that could carry
	// them.
	unreachable int64
}

// noWork gathers the node's facts for noWorkReasons.
func (n *Node) noWork(e api.Earnings, mp marketPrice) []api.NoWorkReason {
	f := idleFacts{selling: n.seller != nil, own: e.OwnPerHour, median: mp.median, offers: mp.offers,
		unreachable: e.Month.Refusals[string(contract.ReasonUnreachable)]}
	if n.payments == nil {
		f.paymentsOff = n.noBuy
	}
	if n.sandbox == nil || len(n.offeredRuntimes()) == 0 {
		f.sandboxOff = "the sandbox cannot run jobs"
		for _, s := range n.noSell {
			if strings.Contains(s, "sandbox") || strings.Contains(s, "runtime") {
				f.sandboxOff = s
				break
			}
		}
	}
	if n.meter != nil {
		snap := n.meter.Snapshot()
		f.measured, f.spareCPU, f.meterReason = !snap.Measured.At.IsZero(), snap.Spare.MilliCPU, string(snap.Reason)
	}
	if n.book != nil && n.host != nil {
		sc := n.book.Score(n.host.ID())
		f.repKnown, f.repBlocked, f.repMean, f.repEvid, f.repWhy = true, sc.Blocked, sc.Mean, sc.Evidence, sc.Why
		f.repThreshold = n.book.Config().Threshold
	}
	if n.reach != nil {
		f.listenKnown, f.reach = true, n.reach.view().State
	}
	return noWorkReasons(f)
}

// noWorkReasons says why the node had no (or little) work, most important
// first: what stops selling outright, then what makes buyers pass it by.
func noWorkReasons(f idleFacts) []api.NoWorkReason {
	var out []api.NoWorkReason
	add := func(code, detail, fix string) {
		out = append(out, api.NoWorkReason{Code: code, Detail: detail, Fix: fix})
	}
	if f.paymentsOff != "" {
		add("payments", "payments are off: "+f.paymentsOff,
			"configure payment.rpc_host, payment.rpc_user, payment.rpc_pass and the wallet passphrase, then restart; `blackbox doctor` checks them")
	}
	if f.sandboxOff != "" {
		add("sandbox", f.sandboxOff, "start containerd (sandbox.address) and run `blackbox doctor`")
	}
	switch r := f.meterReason; {
	case strings.HasPrefix(r, "outside available hours"):
		add("hours", "not selling now: "+r, "widen meter.hours and meter.days, or clear them to sell at any hour")
	case strings.HasPrefix(r, "price ") && strings.Contains(r, "power floor"):
		add("price", r, "raise meter.pricing.core_hour above the floor, or lower meter.power")
	case f.selling && f.measured && f.spareCPU <= 0:
		add("capacity", "nothing on offer: "+r, "lower meter.reserve or raise meter.max")
	}
	if f.median > 0 && f.own > f.median*1.1 {
		offers := fmt.Sprintf("%d offers", f.offers)
		if f.offers == 1 {
			offers = "1 offer"
		}
		add("price", fmt.Sprintf("your price %.0f sat/h is %.0f%% above the market's median %.0f sat/h for the same resources (%s)",
			f.own, (f.own/f.median-1)*100, f.median, offers),
			"lower meter.pricing (core_hour, memory_gib_hour) towards the median")
	}
	if f.unreachable > 0 {
		add("unreachable", fmt.Sprintf("%d buyer(s) gave up on a contract this node accepted (30 days): they had no direct connection to it, nor a relayed one whose limits fit", f.unreachable),
			"open or forward the listen port (TCP and UDP) on the router, or enable UPnP there, so that buyers reach this node directly or by hole punching")
	}
	if f.repKnown && (f.repBlocked || f.repEvid > 0 && f.repMean < f.repThreshold) {
		add("reputation", fmt.Sprintf("buyers see a low reputation (%.2f from %.1f contracts of evidence): %s", f.repMean, f.repEvid, f.repWhy),
			"deliver the next jobs in full and on time; failed and late jobs weigh most")
	}
	switch {
	case !f.listenKnown:
	case f.reach == StateUnreachable:
		add("reachability", "this node is behind NAT with no relay slot: buyers outside its network cannot reach it",
			"forward TCP and UDP 7460 on the router to this machine, or enable UPnP on the router, or set network.relays; `blackbox doctor` says more")
	case f.reach == StateUnknown:
		add("reachability", "no peer has confirmed that it can dial this node (on a loopback or LAN market none ever does): buyers outside this network may not reach it",
			"connect to the internet market (bootstrap), forward TCP and UDP 7460 on the router, or set network.relays")
	}
	return out
}
