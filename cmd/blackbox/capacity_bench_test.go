//go:build integration

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkConcurrentJobs (issue 14, "how many jobs a seller can carry"):
// 20 tiny jobs submitted at once through the market to one seller selling
// two cores, a quarter core each (8 slots: the other 12 are refused for
// capacity and come back when the seller's retry-after says), against the
// same 20 jobs run at once directly on the seller's containerd (`blackbox
// sandbox run`, no admission). Each iteration runs both, interleaved; it
// reports jobs/s of each and the ratio market ÷ direct (goal >= 0.8, a
// BENCHROW line), and the channels the buyer opened (capacity
// reservations: every contract's worst case fits its channel).
func BenchmarkConcurrentJobs(b *testing.B) {
	const jobs = 20
	m := newMarket(b)
	seller := m.daemon([]string{"BLACKBOX_METER_MAX_CPU=2"}, "--metrics-addr", "127.0.0.1:0")
	buyer := m.daemon([]string{"BLACKBOX_METER_MAX_CPU=0"}, "--metrics-addr", "127.0.0.1:0", "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 1)
	work := b.TempDir()
	image := busybox(b, work)
	job := []string{"sh", "-c", "echo hello > /out/hello.txt"}
	limits := []string{"--cpus", "250m", "--memory", "64MiB"}

	direct := func(i int) error {
		args := append(append([]string{"sandbox", "run", "--data-dir", filepath.Join(work, "sandbox"), "--image", image,
			"--out", filepath.Join(work, "direct", strconv.Itoa(i))}, limits...), "--")
		cmd := exec.Command(m.bin, append(args, job...)...)
		cmd.Env = append(os.Environ(), m.env...)
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("sandbox run: %v\n%s", err, o)
		}
		return nil
	}
	market := func(i int) error {
		out := filepath.Join(work, "market", strconv.Itoa(i))
		os.RemoveAll(out)
		args := append(append([]string{"--data-dir", buyer.dir, "submit", "--json", "--image", image, "--out", out,
			"--time", "1m", "--max-price", "5000"}, limits...), "--")
		var stdout strings.Builder
		cmd := exec.Command(m.bin, append(args, job...)...)
		cmd.Stdout = &stdout
		if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), `"state":"done"`) {
			return fmt.Errorf("submit: %v\n%s", err, stdout.String())
		}
		return nil
	}
	// all runs n of f at once and returns how long they took.
	all := func(n int, f func(int) error) time.Duration {
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i := range n {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		took := time.Since(start)
		for _, err := range errs {
			if err != nil {
				b.Fatalf("%v\n%s", err, tail(buyer.logs.String(), 30))
			}
		}
		return took
	}
	// Warm: the image imported on both paths, the buyer's first channel
	// open and confirmed.
	all(1, direct)
	all(1, market)

	// Where the market jobs' time went: each phase's sum over the jobs
	// (the buyer's and the seller's blackbox_job_phase_duration_seconds),
	// per job. Concurrent jobs overlap, so these add up to more than the
	// wall time; a phase that grows with the load shows where jobs wait.
	sellerMetrics, buyerMetrics := metricsAddr(b, m.bin, seller.proc), metricsAddr(b, m.bin, buyer.proc)
	bb, sb := phaseSums(b, buyerMetrics, "buyer"), phaseSums(b, sellerMetrics, "seller")
	var directT, marketT time.Duration
	for b.Loop() {
		directT += all(jobs, direct)
		marketT += all(jobs, market)
	}
	n := float64(b.N * jobs)
	ba, sa := phaseSums(b, buyerMetrics, "buyer"), phaseSums(b, sellerMetrics, "seller")
	line := "per market job, summed over the concurrent jobs (ms): buyer"
	for _, p := range phases {
		line += fmt.Sprintf(" %s %.0f", p, float64(ba[p]-bb[p])/n/1e6)
	}
	line += "; seller"
	for _, p := range sellerPhases {
		line += fmt.Sprintf(" %s %.0f", p, float64(sa[p]-sb[p])/n/1e6)
	}
	b.Log(line)
	directRate, marketRate := n/directT.Seconds(), n/marketT.Seconds()
	ratio := marketRate / directRate
	b.ReportMetric(directRate, "direct-jobs/s")
	b.ReportMetric(marketRate, "market-jobs/s")
	b.ReportMetric(ratio, "x-direct")
	cl, err := buyer.api().Channels(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(cl)), "channels")
	if cs, err := seller.api().Contracts(b.Context()); err == nil {
		b.ReportMetric(float64(cs.Rejections["capacity"])/n, "capacity-refusals/job")
	}
	met := "no"
	if ratio >= 0.8 {
		met = "yes"
	}
	fmt.Printf("BENCHROW %d concurrent tiny jobs, market on 8 slots = %.2f jobs/s|%.2f jobs/s (sandbox run, all at once)|%.2f|>= 0.8|%s\n",
		jobs, marketRate, directRate, ratio, met)
}
