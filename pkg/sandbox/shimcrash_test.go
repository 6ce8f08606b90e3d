//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd/namespaces"
)

// procStat returns the state and the parent of process pid; ok is false
// when there is no such process.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	fmt.Sscan(f[1], &ppid)
	return f[0], ppid, true
}

// alive says whether pid is a live process (a zombie has ended).
func alive(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != "Z"
}

// waitFor polls cond every 50 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// shimJob is a long job started in the background.
type shimJob struct {
	pid, shim int
	cancel    context.CancelFunc
	done      chan struct{}
	res       *sandbox.Result
	err       error
	ended     time.Time
}

func startSleeper(t *testing.T, sb *sandbox.Sandbox, img string) *shimJob {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	j := &shimJob{cancel: cancel, done: make(chan struct{})}
	pids := make(chan int, 1)
	go func() {
		defer close(j.done)
		j.res, j.err = sb.Run(ctx, sandbox.Job{Image: img, Args: []string{"sleep", "1000"},
			Limits:  sandbox.Limits{CPUMillis: 100, MemoryBytes: 16 << 20, WallClock: 5 * time.Minute},
			OnStart: func(pid int) { pids <- pid }})
		j.ended = time.Now()
	}()
	t.Cleanup(func() { cancel(); <-j.done })
	select {
	case j.pid = <-pids:
		_, j.shim, _ = procStat(j.pid)
	case <-j.done:
		t.Fatalf("job ended before it started: %+v %v", j.res, j.err)
	case <-time.After(60 * time.Second):
		t.Fatal("job did not start in 60s")
	}
	return j
}

// A kill -9 of a shared shim ends the jobs it serves, and only those: each
// ends with ErrShimDied (no hang), its processes gone; the group's anchor
// comes back and the next job runs in it. A group holds at most
// ShimGroupJobs jobs; the jobs beyond start another group.
func TestSharedShimKilled(t *testing.T) {
	needDaemon(t)
	cfg := testConfig(t.TempDir())
	cfg.Namespace = testNS + "-shimkill"
	cfg.SharedShim = true
	cfg.ShimGroupJobs = 2
	sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close(); cleanNamespace(nil, cfg.Namespace) })
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		t.Fatal(err)
	}
	img, err := sb.ImportImage(context.Background(), bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	if err != nil {
		t.Fatal(err)
	}
	groupUp := func(i int) func() bool {
		return func() bool { up, _ := sb.SharedShims(); return len(up) > i && up[i] }
	}
	if !waitFor(30*time.Second, groupUp(0)) {
		t.Fatal("the shared shim's anchor is not up after 30s")
	}

	// Two jobs fill group 0; the third starts its own shim and group 1,
	// which the fourth joins.
	a, b := startSleeper(t, sb, img.Name), startSleeper(t, sb, img.Name)
	if a.shim != b.shim {
		t.Fatalf("the first two jobs are in shims %d and %d, want one", a.shim, b.shim)
	}
	c := startSleeper(t, sb, img.Name)
	if c.shim == a.shim {
		t.Fatalf("a third job joined the full group's shim %d", a.shim)
	}
	if !waitFor(30*time.Second, groupUp(1)) {
		t.Fatal("no second group 30s after the first was full")
	}
	d := startSleeper(t, sb, img.Name)
	if d.shim == a.shim || d.shim == c.shim {
		t.Fatalf("the fourth job is in shim %d (group 0: %d, the third's own: %d), want group 1's", d.shim, a.shim, c.shim)
	}
	up, jobs := sb.SharedShims()
	t.Logf("groups up %v, jobs %v; shims: group 0 %d, own %d, group 1 %d", up, jobs, a.shim, c.shim, d.shim)

	killed := time.Now()
	if err := syscall.Kill(a.shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*shimJob{a, b} {
		select {
		case <-j.done:
		case <-time.After(30 * time.Second):
			t.Fatal("a job of the killed shim still runs after 30s")
		}
		t.Logf("job %d ended %s after its shim's kill: %v", j.pid, j.ended.Sub(killed).Round(time.Millisecond), j.err)
		if !errors.Is(j.err, sandbox.ErrShimDied) || j.res != nil {
			t.Errorf("job of the killed shim: result %+v, err %v; want ErrShimDied", j.res, j.err)
		}
		if alive(j.pid) {
			t.Errorf("job process %d still alive after Run returned", j.pid)
		}
	}
	for _, j := range []*shimJob{c, d} {
		select {
		case <-j.done:
			t.Errorf("job %d in another shim ended with its neighbour's shim: %+v %v", j.pid, j.res, j.err)
		default:
		}
	}
	if !waitFor(30*time.Second, groupUp(0)) {
		t.Fatal("group 0's anchor is not back 30s after its shim was killed")
	}
	t.Logf("group 0 back %s after the kill", time.Since(killed).Round(time.Millisecond))
	var shim int
	var out bytes.Buffer
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img.Name, Args: []string{"echo", "after"}, Stdout: &out,
		OnStart: func(pid int) { _, shim, _ = procStat(pid) },
		Limits:  sandbox.Limits{CPUMillis: 100, MemoryBytes: 16 << 20, WallClock: time.Minute}})
	if err != nil || res.ExitCode != 0 || out.String() != "after\n" {
		t.Fatalf("next job: %+v %v %q", res, err, out.String())
	}
	if shim == a.shim || shim == c.shim || shim == d.shim {
		t.Errorf("next job in shim %d, want group 0's new one", shim)
	}
	for _, j := range []*shimJob{c, d} {
		j.cancel()
		<-j.done
		if j.err != nil || j.res.Reason != sandbox.ReasonKilled {
			t.Errorf("cancelled job: %+v %v", j.res, j.err)
		}
	}
	ctx := namespaces.WithNamespace(context.Background(), cfg.Namespace)
	if list, _ := sb.Client().Containers(ctx, notAnchor); len(list) != 0 {
		t.Errorf("%d job containers left", len(list))
	}
}
