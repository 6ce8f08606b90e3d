package store_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// boltPair is a buyer and a seller, each on its own bbolt store, with n
// channels open from the buyer to the seller; channel i's seller-side peer
// is peers[i].
type boltPair struct {
	buyer, seller *payment.Manager
	ids, peers    []string
	sellerDB      string // the seller's database path
	// dbs are the buyer's and the seller's databases.
	dbs [2]*store.DB
	// node, when set, is what a node records beside each update
	// (payment_node_bench_test.go).
	node *nodeRecords
}

func newBoltPair(b testing.TB, n int, backup bool) *boltPair {
	b.Helper()
	return newBoltPairSeq(b, n, backup, false)
}

// newBoltPairSeq is newBoltPair; with sequential, the seller's Manager
// sees its store as a plain ChannelStore (not a payment.CheckedStore), so
// it checks each update's signature first and writes it after, as before
// the check overlapped the write.
func newBoltPairSeq(b testing.TB, n int, backup, sequential bool) *boltPair {
	b.Helper()
	var sellerDB string
	var dbs [2]*store.DB
	open := func(name string) payment.ChannelStore {
		dir := b.TempDir()
		if name == "seller" {
			sellerDB = dir + "/" + name + ".db"
		}
		db, err := store.Open(dir+"/"+name+".db", time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if name == "seller" {
			dbs[1] = db
		} else {
			dbs[0] = db
		}
		b.Cleanup(func() { db.Close() })
		if !backup {
			return store.NewPaymentStore(db)
		}
		// As the node runs it: with the channel backup.
		bs, err := payment.NewBackupStore(store.NewPaymentStore(db), dir+"/channels.backup")
		if err != nil {
			b.Fatal(err)
		}
		return bs
	}
	payKey, _ := btcec.NewPrivateKey()
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payKey.PubKey().SerializeCompressed()), btcdtest.Params)
	cfg := payment.RegtestConfig()
	cfg.PayoutAddress = addr.EncodeAddress()
	cfg.Confirmations = 1
	chain := paytest.NewChain()
	mk := func(st payment.ChannelStore, seed byte, f payment.Funder) *payment.Manager {
		keys, _ := payment.NewKeyring(bytes.Repeat([]byte{seed}, 32), btcdtest.Params)
		m, err := payment.NewManager(payment.ManagerConfig{Config: cfg, Chain: chain, Store: st, Keys: keys, Funder: f})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	sellerStore := open("seller")
	if sequential {
		sellerStore = struct{ payment.ChannelStore }{sellerStore}
	}
	p := &boltPair{buyer: mk(open("buyer"), 1, paytest.NewFunder(chain)), seller: mk(sellerStore, 2, nil), sellerDB: sellerDB}
	p.dbs = dbs
	ctx := context.Background()
	terms, _ := p.seller.SellerTerms()
	for i := 0; i < n; i++ {
		// Each channel has its own buyer key (FamilyChannelBuyer, i) and
		// its own peer name: to the seller, n distinct buyers.
		c, req, err := p.buyer.OpenChannel(ctx, payment.OpenParams{Peer: "s", Seller: terms, Capacity: 100_000_000, FeeRate: 2})
		if err != nil {
			b.Fatal(err)
		}
		peer := "b"
		if n > 1 {
			peer = fmt.Sprintf("b%d", i)
		}
		if _, err := p.seller.AcceptOpen(ctx, peer, req.Encode()); err != nil {
			b.Fatal(err)
		}
		p.ids, p.peers = append(p.ids, c.ID), append(p.peers, peer)
	}
	chain.Mine(1)
	_ = p.buyer.Tick(ctx)
	_ = p.seller.Tick(ctx)
	return p
}

// update is one payment on channel i: the buyer signs and persists, the
// seller verifies with the script engine and persists.
func (p *boltPair) update(b testing.TB, i int) {
	if p.node != nil {
		p.node.update(b, p, i)
		return
	}
	ctx := context.Background()
	u, err := p.buyer.Pay(ctx, p.ids[i], "c", 1)
	if err != nil {
		b.Error(err)
		return
	}
	if _, err := p.seller.AcceptUpdate(ctx, p.peers[i], u.Encode()); err != nil {
		b.Error(err)
	}
}

// BenchmarkPaymentUpdateBolt is BenchmarkChannelUpdate with both sides on
// the real bbolt store: one channel, one update at a time, so every update
// is persisted twice (buyer before sending, seller before acknowledging,
// its signature check running while its write is synced) and nothing is
// shared. It reports updates/s, raw btcec sign+verify per
// second measured in the same benchmark (interleaved, see measureUpdates),
// and their ratio.
func BenchmarkPaymentUpdateBolt(b *testing.B) { benchmarkPaymentUpdateBolt(b, false) }

// BenchmarkPaymentUpdateBoltBackedUp is BenchmarkPaymentUpdateBolt with the
// channel backup (what the node runs).
func BenchmarkPaymentUpdateBoltBackedUp(b *testing.B) { benchmarkPaymentUpdateBolt(b, true) }

func benchmarkPaymentUpdateBolt(b *testing.B, backup bool) {
	measureUpdates(b, newBoltPair(b, 1, backup), 1, false)
}

// parallelChannels is how many buyers (one channel each) pay the seller at
// once in BenchmarkPaymentUpdateBoltParallel.
const parallelChannels = 32

// BenchmarkPaymentUpdateBoltParallel: a seller with parallelChannels
// channels, one goroutine per channel paying in a loop, both sides on bbolt.
// Updates of different channels verify in parallel and their writes share
// group commits (the payment log). The baseline is raw btcec sign+verify run
// by the same number of goroutines, measured in the same benchmark.
func BenchmarkPaymentUpdateBoltParallel(b *testing.B) { benchmarkPaymentUpdateBoltParallel(b, false) }

// BenchmarkPaymentUpdateBoltParallelBackedUp is the parallel benchmark with
// the channel backup (what the node runs).
func BenchmarkPaymentUpdateBoltParallelBackedUp(b *testing.B) {
	benchmarkPaymentUpdateBoltParallel(b, true)
}

func benchmarkPaymentUpdateBoltParallel(b *testing.B, backup bool) {
	measureUpdates(b, newBoltPair(b, parallelChannels, backup), parallelChannels, false)
}

// measureUpdates runs b.N updates over the pair's g channels, one goroutine
// each, and as many raw btcec sign+verify rounds on g goroutines: in
// chunks, each chunk of updates followed by as many raw rounds, so that
// both see the same machine load (a shared machine's load changes by the
// second). It reports updates/s, raw_signverify/s and their ratio, and
// with row keeps a BENCHROW line for bench.sh's table (printed by TestMain) (goals of issue 14: >= 0.4
// for one channel, >= 0.5 for 32 in parallel, as the node runs an update:
// the BenchmarkPaymentUpdateNode benchmarks).
func measureUpdates(b *testing.B, p *boltPair, g int, row bool) {
	chunk := 16 * g
	var upTime, rawTime time.Duration
	var rawOps int
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(chunk, b.N-done)
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < g; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					p.update(b, i)
				}
			}()
		}
		wg.Wait()
		upTime += time.Since(start)
		done += n
		b.StopTimer()
		start = time.Now()
		parallelRawSignVerify(g, n)
		rawTime += time.Since(start)
		rawOps += n
		b.StartTimer()
	}
	b.StopTimer()
	ups := float64(b.N) / upTime.Seconds()
	raw := float64(rawOps) / rawTime.Seconds()
	b.ReportMetric(ups, "updates/s")
	b.ReportMetric(raw, "raw_signverify/s")
	b.ReportMetric(ups/raw, "ratio")
	if !row || b.N < 100 {
		return
	}
	goal, what := 0.4, "1 channel"
	if g > 1 {
		goal, what = 0.5, fmt.Sprintf("%d channels in parallel", g)
	}
	met := "no"
	if ups/raw >= goal {
		met = "yes"
	}
	benchRowsMu.Lock()
	defer benchRowsMu.Unlock()
	// The last run (the largest b.N) is the one go test reports.
	benchRows[b.Name()] = fmt.Sprintf("BENCHROW channel updates/s, real store + backup, %s = %.0f/s|raw btcec sign+verify %.0f/s|%.2f|>= %.1f|%s", what, ups, raw, ups/raw, goal, met)
}

var (
	benchRowsMu sync.Mutex
	benchRows   = map[string]string{}
)

// TestMain prints the benchmarks' BENCHROW lines once they have run.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, k := range slices.Sorted(maps.Keys(benchRows)) {
		fmt.Println(benchRows[k])
	}
	os.Exit(code)
}

// parallelRawSignVerify runs total rounds of payment.RawSignVerify spread
// over g goroutines and waits for them.
func parallelRawSignVerify(g, total int) {
	var wg sync.WaitGroup
	for i := 0; i < g; i++ {
		n := total / g
		if i < total%g {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			payment.RawSignVerify(n)
		}()
	}
	wg.Wait()
}

// BenchmarkPaymentUpdateFloor is the ceiling of the one-channel ratio under
// the durability rule when nothing overlaps: one raw sign+verify and two
// sequential fdatasync'd writes of a channel record's size (the buyer's
// before it sends, the seller's before it acknowledges) at increasing
// offsets of preallocated files, as the payment log writes, against raw
// sign+verify alone, interleaved in chunks. The store beats it by the
// time the seller's verification overlaps its fdatasync
// (payment.CheckedStore); the buyer's signature and the two fdatasyncs
// stay in sequence.
func BenchmarkPaymentUpdateFloor(b *testing.B) {
	dir := b.TempDir()
	var files [2]*os.File
	for i := range files {
		f, err := os.Create(fmt.Sprintf("%s/%d", dir, i))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, 1<<20)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		files[i] = f
	}
	rec := make([]byte, 1500)
	var upTime, rawTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(16, b.N-done)
		start := time.Now()
		for i := 0; i < n; i++ {
			payment.RawSignVerify(1)
			off := int64((done+i)*len(rec)) % (1<<20 - int64(len(rec)))
			for _, f := range files {
				if _, err := f.WriteAt(rec, off); err != nil {
					b.Fatal(err)
				}
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		}
		upTime += time.Since(start)
		done += n
		b.StopTimer()
		rawTime += payment.RawSignVerify(n)
		b.StartTimer()
	}
	ups := float64(b.N) / upTime.Seconds()
	raw := float64(b.N) / rawTime.Seconds()
	b.ReportMetric(ups, "updates/s")
	b.ReportMetric(raw, "raw_signverify/s")
	b.ReportMetric(ups/raw, "ratio")
}

// BenchmarkPaymentUpdateCheckOverlap is the one-channel update, as the node
// runs it (real store, backup), on two pairs side by side: one whose
// seller checks the buyer's signature while its payment-log write is
// synced (payment.CheckedStore, what the node does), one whose seller
// checks first and writes after (sequential). Chunks of 16 updates
// alternate between the two, so both see the same machine and disk load;
// it reports both rates and overlap ÷ sequential.
func BenchmarkPaymentUpdateCheckOverlap(b *testing.B) {
	pairs := []*boltPair{newBoltPairSeq(b, 1, true, false), newBoltPairSeq(b, 1, true, true)}
	var took [2]time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(16, b.N-done)
		for k, p := range pairs {
			start := time.Now()
			for i := 0; i < n; i++ {
				p.update(b, 0)
			}
			took[k] += time.Since(start)
		}
		done += n
	}
	b.StopTimer()
	overlap, seq := float64(b.N)/took[0].Seconds(), float64(b.N)/took[1].Seconds()
	b.ReportMetric(overlap, "overlap_updates/s")
	b.ReportMetric(seq, "sequential_updates/s")
	b.ReportMetric(overlap/seq, "overlap/sequential")
}
