//go:build integration

package sandbox_test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

var trivialLimits = sandbox.Limits{CPUMillis: 1000, MemoryBytes: 64 << 20, WallClock: time.Minute}

func runTrivial(b *testing.B, sb *sandbox.Sandbox, img string) { runTrivialUnder(b, sb, img, "") }

func runTrivialUnder(b *testing.B, sb *sandbox.Sandbox, img, rt string) *sandbox.Result {
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Args: []string{"true"}, Runtime: rt, Limits: trivialLimits})
	if err != nil || res.ExitCode != 0 {
		b.Fatalf("job: %+v %v", res, err)
	}
	return res
}

func runCtr(b *testing.B, img string, i int) {
	id := fmt.Sprintf("bench-ctr-%d-%d", time.Now().UnixNano(), i+1)
	out, err := exec.Command("ctr", "--address", daemonAddr, "--namespace", testNS, "run", "--rm", img, id, "true").CombinedOutput()
	if err != nil {
		b.Fatalf("ctr run: %v: %s", err, out)
	}
}

// BenchmarkTrivialJob runs `true` through pkg/sandbox and, alternately, with
// `ctr run --rm` of the same image on the same daemon, and reports both
// times per job and their ratio (goal ≤ 1.1). pkg/sandbox does more per job
// (scratch tmpfs, seccomp, user namespace, metrics, /out tar), ctr pays
// for starting a process.
func BenchmarkTrivialJob(b *testing.B) {
	sb, img := newSandbox(b)
	if _, err := exec.LookPath("ctr"); err != nil {
		b.Skip("ctr not installed")
	}
	runTrivial(b, sb, img) // warm: the remapped snapshot exists
	runCtr(b, img, -1)
	var tsb, tctr time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		runTrivial(b, sb, img)
		t1 := time.Now()
		runCtr(b, img, i)
		tsb += t1.Sub(t0)
		tctr += time.Since(t1)
	}
	b.ReportMetric(float64(tsb.Milliseconds())/float64(b.N), "sandbox-ms/job")
	b.ReportMetric(float64(tctr.Milliseconds())/float64(b.N), "ctr-ms/job")
	b.ReportMetric(float64(tsb)/float64(tctr), "ratio")
}

// BenchmarkSandboxJob is the pkg/sandbox half of BenchmarkTrivialJob alone.
func BenchmarkSandboxJob(b *testing.B) {
	sb, img := newSandbox(b)
	runTrivial(b, sb, img)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runTrivial(b, sb, img)
	}
}

// BenchmarkCtrRun is the `ctr run --rm` half of BenchmarkTrivialJob alone.
func BenchmarkCtrRun(b *testing.B) {
	_, img := newSandbox(b)
	if _, err := exec.LookPath("ctr"); err != nil {
		b.Skip("ctr not installed")
	}
	runCtr(b, img, -1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runCtr(b, img, i)
	}
}

// BenchmarkConcurrent20 starts 20 trivial jobs at once per iteration and
// reports jobs per second.
func BenchmarkConcurrent20(b *testing.B) {
	sb, img := newSandbox(b)
	runTrivial(b, sb, img)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for j := 0; j < 20; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Args: []string{"true"}, Limits: trivialLimits})
				if err != nil || res.ExitCode != 0 {
					b.Errorf("job: %+v %v", res, err)
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(20*b.N)/time.Since(start).Seconds(), "jobs/s")
}

// BenchmarkTrivialJobNoUserNS is BenchmarkTrivialJob with sandbox.userns
// off, to show what the user-namespace remap costs.
func BenchmarkTrivialJobNoUserNS(b *testing.B) {
	needDaemon(b)
	_, img := newSandbox(b)
	cfg := testConfig(b.TempDir())
	cfg.UserNS = "off"
	sb, err := sandbox.New(context.Background(), cfg, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	runTrivial(b, sb, img)
	runCtr(b, img, -1)
	var tsb, tctr time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		runTrivial(b, sb, img)
		t1 := time.Now()
		runCtr(b, img, i)
		tsb += t1.Sub(t0)
		tctr += time.Since(t1)
	}
	b.ReportMetric(float64(tsb.Milliseconds())/float64(b.N), "sandbox-ms/job")
	b.ReportMetric(float64(tctr.Milliseconds())/float64(b.N), "ctr-ms/job")
	b.ReportMetric(float64(tsb)/float64(tctr), "ratio")
}

// runtimeRuns are BenchmarkRuntimes' final runs (one per -count), printed
// by TestMain as one table once the benchmarks are done.
var runtimeRuns, runtimeOnes []runtimeRun

type runtimeRun struct {
	ctr    time.Duration                         // `ctr run --rm` with runc, the median job
	jobs   int                                   // jobs of each kind the medians are of
	per    map[string]time.Duration              // pkg/sandbox per runtime, the median job
	failed map[string]error                      // runtimes the probe found unusable
	phases map[string]map[string][]time.Duration // runtime → phase → each job's
	order  []string                              // the phases' names in order
}

// BenchmarkRuntimes runs a trivial job (`true`) through pkg/sandbox under
// each runtime the probe finds usable (runc, crun, runsc) and with `ctr run
// --rm` (runc) of the same image on the same daemon, interleaved job by
// job, runtimeRounds rounds an op, and reports each median job and its
// ratio to ctr's (a single slow job of a few does not decide it). TestMain
// prints the runs side by side and the BENCHROW lines of bench.sh's table
// (goals: sandbox runc ≤ 1.1 × ctr run, sandbox crun ≤ 0.7 × ctr run with
// runc).
func BenchmarkRuntimes(b *testing.B) {
	const runtimeRounds = 9
	sb, img := newSandbox(b)
	if _, err := exec.LookPath("ctr"); err != nil {
		b.Skip("ctr not installed")
	}
	_, failed := sb.ProbeRuntimes(context.Background())
	var rts []string
	for _, rt := range sandbox.Runtimes {
		if failed[rt] == nil {
			rts = append(rts, rt)
			runTrivialUnder(b, sb, img, rt) // warm
		}
	}
	runCtr(b, img, -1)
	per := map[string][]time.Duration{}
	phases := map[string]map[string][]time.Duration{}
	var order []string
	var tctr []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N*runtimeRounds; i++ {
		t0 := time.Now()
		runCtr(b, img, i)
		tctr = append(tctr, time.Since(t0))
		for _, rt := range rts {
			t0 := time.Now()
			res := runTrivialUnder(b, sb, img, rt)
			per[rt] = append(per[rt], time.Since(t0))
			if phases[rt] == nil {
				phases[rt] = map[string][]time.Duration{}
			}
			for _, p := range res.Phases() {
				if !slices.Contains(order, p.Name) {
					order = append(order, p.Name)
				}
				phases[rt][p.Name] = append(phases[rt][p.Name], p.Took)
			}
		}
	}
	b.StopTimer()
	run := runtimeRun{ctr: medianDuration(tctr), jobs: len(tctr), per: map[string]time.Duration{}, failed: failed, phases: phases, order: order}
	b.ReportMetric(float64(run.ctr.Microseconds())/1e3, "ctr-runc-ms/job")
	for _, rt := range rts {
		run.per[rt] = medianDuration(per[rt])
		b.ReportMetric(float64(run.per[rt].Microseconds())/1e3, rt+"-ms/job")
		b.ReportMetric(float64(run.per[rt])/float64(run.ctr), rt+"/ctr")
	}
	if b.N > 1 {
		runtimeRuns = append(runtimeRuns, run)
	} else { // the sizing run, or -benchtime 1x
		runtimeOnes = append(runtimeOnes, run)
	}
}

// printRuntimeRuns prints BenchmarkRuntimes' runs as one table, then its
// BENCHROW lines (medians of the runs).
func printRuntimeRuns() {
	if len(runtimeRuns) == 0 {
		runtimeRuns = runtimeOnes
	}
	if len(runtimeRuns) == 0 {
		return
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1e3) }
	fmt.Printf("\ntrivial job per runtime, interleaved with `ctr run --rm` (runc) on the same daemon:\n")
	fmt.Printf("%-4s  %-18s", "run", "ctr run (runc)")
	for _, rt := range sandbox.Runtimes {
		fmt.Printf("  %-24s", "sandbox "+rt)
	}
	fmt.Println()
	for i, r := range runtimeRuns {
		fmt.Printf("%-4d  %-18s", i+1, ms(r.ctr))
		for _, rt := range sandbox.Runtimes {
			cell := "unavailable"
			if d, ok := r.per[rt]; ok {
				cell = fmt.Sprintf("%s (%.2f)", ms(d), float64(d)/float64(r.ctr))
			}
			fmt.Printf("  %-24s", cell)
		}
		fmt.Println()
	}
	// Where a job's time goes: each phase's median over the last run's
	// jobs (sandbox.Result.Phases).
	last := runtimeRuns[len(runtimeRuns)-1]
	fmt.Printf("\nphases of the last run, median per job (ms):\n%-10s", "phase")
	for _, rt := range sandbox.Runtimes {
		if last.phases[rt] != nil {
			fmt.Printf("  %8s", rt)
		}
	}
	fmt.Println()
	for _, name := range last.order {
		fmt.Printf("%-10s", name)
		for _, rt := range sandbox.Runtimes {
			if last.phases[rt] != nil {
				fmt.Printf("  %8.1f", float64(medianDuration(last.phases[rt][name]).Microseconds())/1e3)
			}
		}
		fmt.Println()
	}
	for _, rt := range sandbox.Runtimes {
		if err := runtimeRuns[0].failed[rt]; err != nil {
			fmt.Printf("%s: unavailable: %s\n", rt, strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
	median := func(f func(runtimeRun) float64) float64 {
		v := make([]float64, len(runtimeRuns))
		for i, r := range runtimeRuns {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	ctr := median(func(r runtimeRun) float64 { return float64(r.ctr.Microseconds()) / 1e3 })
	for _, g := range []struct {
		rt, figure string
		goal       float64 // runsc has none: the table above only
	}{{"runc", "sandbox runc ÷ ctr run", 1.1}, {"crun", "sandbox crun ÷ ctr run runc", 0.7}} {
		if _, ok := runtimeRuns[0].per[g.rt]; !ok {
			fmt.Printf("BENCHROW %s = unavailable: %v|%.1f ms|-|<= %g|no\n", g.figure, runtimeRuns[0].failed[g.rt], ctr, g.goal)
			continue
		}
		t := median(func(r runtimeRun) float64 { return float64(r.per[g.rt].Microseconds()) / 1e3 })
		ratio := median(func(r runtimeRun) float64 { return float64(r.per[g.rt]) / float64(r.ctr) })
		met := "no"
		if ratio <= g.goal {
			met = "yes"
		}
		fmt.Printf("BENCHROW %s (median job of %d, median of %d runs) = %.1f ms|%.1f ms|%.2f|<= %g|%s\n", g.figure, runtimeRuns[0].jobs, len(runtimeRuns), t, ctr, ratio, g.goal, met)
	}
}

func medianDuration(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}
