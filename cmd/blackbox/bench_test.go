//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// phases of a buyer's job, in order (contract.JobStatus.Phase), then the
// results the CLI brings home after the job is done.
var phases = []string{"discover", "negotiate", "fund", "transfer", "run", "results"}

// BenchmarkSubmitToResult: a trivial job (write /out/hello.txt) through the
// whole market on loopback — `blackbox submit` on a buyer node, one seller,
// a channel already open (the first job, untimed, opens it and caches the
// image) — side by side with the same job run directly by `blackbox
// sandbox run` on the same containerd. The market sub-benchmark reports
// the ratio to the direct one (goal <= 2) and the time of each phase,
// observed by polling the buyer's API every 10ms.
func BenchmarkSubmitToResult(b *testing.B) {
	m := newMarket(b)
	seller := m.daemon([]string{"BLACKBOX_METER_PRICING_START_FEE=1000"})
	buyer := m.daemon([]string{"BLACKBOX_METER_MAX_CPU=0"}, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	work := b.TempDir()
	image := busybox(b, work)
	job := []string{"sh", "-c", "echo hello > /out/hello.txt"}

	direct := func() {
		out := filepath.Join(work, "direct")
		args := append([]string{"sandbox", "run", "--data-dir", filepath.Join(work, "sandbox"), "--image", image,
			"--cpus", "1", "--memory", "128MiB", "--out", out, "--"}, job...)
		cmd := exec.Command(m.bin, args...)
		cmd.Env = append(os.Environ(), m.env...)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("sandbox run: %v\n%s", err, o)
		}
	}
	var spent [6]time.Duration // per phase, over the timed market runs
	market := func(timed bool) {
		out := filepath.Join(work, "market")
		os.RemoveAll(out)
		args := append([]string{"--data-dir", buyer.dir, "submit", "--json", "--image", image, "--out", out,
			"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "5000", "--"}, job...)
		cmd := exec.Command(m.bin, args...)
		var stdout strings.Builder
		cmd.Stdout = &stdout
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// Watch the phases: the newest job is ours.
		seen := make([]time.Time, len(phases)) // when each phase was first seen
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := buyer.api()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				js, err := c.Jobs(context.Background())
				if err != nil || len(js) == 0 {
					continue
				}
				j := slices.MaxFunc(js, func(a, b *contract.JobStatus) int { return a.Created.Compare(b.Created) })
				if j.Created.Before(start.Add(-time.Second)) {
					continue
				}
				i := slices.Index(phases, j.Phase)
				if ended(j) {
					i = len(phases) - 1
				}
				now := time.Now()
				for k := 0; k <= i; k++ {
					if seen[k].IsZero() {
						seen[k] = now
					}
				}
			}
		}()
		err := cmd.Wait()
		end := time.Now()
		close(stop)
		wg.Wait()
		if err != nil || !strings.Contains(stdout.String(), `"event":"done","job":`) || !strings.Contains(stdout.String(), `"state":"done"`) {
			b.Fatalf("submit: %v\n%s\n%s", err, stdout.String(), tail(buyer.logs.String(), 30))
		}
		if got, _ := os.ReadFile(filepath.Join(out, "out", "hello.txt")); string(got) != "hello\n" {
			b.Fatalf("out/hello.txt: %q", got)
		}
		if !timed {
			return
		}
		// Each phase lasts from its first sighting to the next seen one's
		// (a phase too short to be seen is counted in the one before);
		// discover starts with the submit command, results end with it.
		seen[0] = start
		last := 0
		for k := 1; k < len(phases); k++ {
			if seen[k].IsZero() {
				continue
			}
			spent[last] += seen[k].Sub(seen[last])
			last = k
		}
		spent[last] += end.Sub(seen[last])
	}
	// Warm both paths: the image is imported, the channel opened.
	direct()
	market(false)

	var directPerOp time.Duration
	b.Run("direct", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			direct()
		}
		directPerOp = time.Since(start) / time.Duration(b.N)
	})
	b.Run("market", func(b *testing.B) {
		spent = [6]time.Duration{}
		start := time.Now()
		for b.Loop() {
			market(true)
		}
		perOp := time.Since(start) / time.Duration(b.N)
		// discover counts from the submit command's start: the CLI adding
		// the image to the blob store and the API call are in it.
		for k, p := range phases {
			b.ReportMetric(float64(spent[k].Milliseconds())/float64(b.N), p+"-ms/op")
		}
		if directPerOp > 0 {
			b.ReportMetric(float64(perOp)/float64(directPerOp), "x-direct")
		}
	})
}

// BenchmarkProposalsPerSecond: how many signed proposals a real `blackbox
// serve` seller answers per second, from a Go client on loopback with 16
// proposals in flight. Every proposal is valid and priced at the seller's
// terms; the seller sells two cores and each proposal asks for one, so the
// first two are accepted (reserving capacity until their funding deadline)
// and the rest rejected for capacity: both paths, each a signature check,
// a store transaction and a signed decision.
func BenchmarkProposalsPerSecond(b *testing.B) {
	m := newMarket(b)
	seller := m.daemon([]string{"BLACKBOX_METER_MAX_CPU=2"})
	ctx := context.Background()
	var o *offer.Offer
	waitFor(b, 30*time.Second, "the seller's offer", func() bool {
		v, err := seller.api().Offer(ctx)
		if err != nil {
			return false
		}
		o, err = offer.Open(v.Envelope, time.Now())
		return err == nil && o.Resources.CPUMillis >= 2000
	})
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ai, err := peer.AddrInfoFromString(seller.bootAddr())
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Connect(ctx, *ai); err != nil {
		b.Fatal(err)
	}
	key := h.Peerstore().PrivKey(h.ID())
	pk, _ := btcec.NewPrivateKey()
	req := contract.Request{Image: "sha256:" + strings.Repeat("ab", 32), ImageSize: 1 << 20, Command: []string{"true"},
		Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 64 << 20, DiskBytes: 64 << 20}, Duration: time.Minute, MaxPrice: 1 << 20}
	terms := contract.TermsFor(o, &req)
	proposal := func() []byte {
		nonce := make([]byte, 16)
		rand.Read(nonce)
		now := time.Now()
		p := &contract.Proposal{Version: contract.Version, Buyer: h.ID(), Seller: ai.ID, OfferSeq: o.Seq, Request: req,
			Interval: terms.Interval, Price: terms.Price, StartFee: terms.StartFee, PaymentKey: pk.PubKey().SerializeCompressed(),
			Nonce: nonce, Issued: now, Expiry: now.Add(time.Minute)}
		env, err := contract.SignProposal(p, key)
		if err != nil {
			b.Fatal(err)
		}
		return env
	}
	// Setup is done once; the sub-benchmark is run with growing b.N. The
	// acceptances accumulate across runs: the seller's two cores are held
	// by the first two until their funding deadline.
	var accepted atomic.Int64
	b.Run("16-in-flight", func(b *testing.B) {
		var rejected, other, failed atomic.Int64
		var lastErr atomic.Value
		b.SetParallelism(8) // 16 in flight on 2 cores
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				d, _, err := contract.Propose(ctx, h, ai.ID, proposal(), nil)
				switch {
				case err != nil:
					failed.Add(1)
					lastErr.Store(err.Error())
				case d.Verdict == contract.Accept:
					accepted.Add(1)
				case d.Verdict == contract.Reject && d.Reason == contract.ReasonCapacity:
					rejected.Add(1)
				default:
					other.Add(1)
					lastErr.Store(fmt.Sprintf("%s %s %s", d.Verdict, d.Reason, d.Message))
				}
			}
		})
		elapsed := time.Since(start)
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "proposals/s")
		b.ReportMetric(float64(rejected.Load())/float64(b.N), "rejected/op")
		if failed.Load() > 0 || other.Load() > 0 || accepted.Load() > 2 {
			b.Fatalf("%d accepted (at most 2 fit), %d rejected for capacity, %d other decisions, %d errors; last: %v",
				accepted.Load(), rejected.Load(), other.Load(), failed.Load(), lastErr.Load())
		}
	})
	if cs, err := seller.api().Contracts(ctx); err != nil || int64(len(cs.Contracts)) != accepted.Load() {
		b.Fatalf("the seller recorded %d contracts (%v); it accepted %d", len(cs.Contracts), err, accepted.Load())
	}
}
