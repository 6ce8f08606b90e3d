//go:build integration

package sandbox_test

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

var trivialLimits = sandbox.Limits{CPUMillis: 1000, MemoryBytes: 64 << 20, WallClock: time.Minute}

func runTrivial(b *testing.B, sb *sandbox.Sandbox, img string) {
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Args: []string{"true"}, Limits: trivialLimits})
	if err != nil || res.ExitCode != 0 {
		b.Fatalf("job: %+v %v", res, err)
	}
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
