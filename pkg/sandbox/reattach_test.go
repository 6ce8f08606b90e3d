//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd/namespaces"
)

// loggedSandbox is a Sandbox in its own namespace (testNS+suffix, cleaned
// up after t) whose jobs' streams go to files, with the busybox image
// imported; cfg starts the next one on the same state.
func loggedSandbox(t *testing.T, suffix string) (sandbox.Config, *sandbox.Sandbox, sandbox.Image) {
	t.Helper()
	needDaemon(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Namespace = testNS + suffix
	cfg.LogBinary = exe
	t.Cleanup(func() { cleanNamespace(nil, cfg.Namespace) })
	ctx := context.Background()
	sb, err := sandbox.New(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		t.Fatal(err)
	}
	img, err := sb.ImportImage(ctx, bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, sb, img
}

// A job whose streams go to files (Config.LogBinary) outlives its
// Sandbox: Run cancelled with ErrDetach leaves it running, the Sandbox
// closes (its owner lock goes, as in a crash), and the next one, keeping
// the job, re-attaches: every line, including those written while no
// process was attached, comes back, with the exit code, the usage and
// /out, and nothing of the job is left after. A job not kept is removed.
func TestDetachAndReattach(t *testing.T) {
	cfg, sb1, img := loggedSandbox(t, "-reattach")
	ctx := context.Background()
	lim := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: 2 * time.Minute}
	script := "i=0; while [ $i -lt 30 ]; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done; echo done > /out/result; exit 3"
	type ran struct {
		res *sandbox.Result
		err error
	}
	start := func(sb *sandbox.Sandbox, id string, out *bytes.Buffer) (context.CancelCauseFunc, chan ran) {
		rctx, cancel := context.WithCancelCause(ctx)
		done, started := make(chan ran, 1), make(chan struct{})
		go func() {
			res, err := sb.Run(rctx, sandbox.Job{ID: id, Image: img.Name, Args: []string{"sh", "-c", script}, Limits: lim, Stdout: out,
				OnStart: func(int) { close(started) }})
			done <- ran{res, err}
		}()
		waitStarted(t, started)
		return cancel, done
	}
	var first, other bytes.Buffer
	cancel, done := start(sb1, "kept", &first)
	cancelOther, doneOther := start(sb1, "dropped", &other)
	time.Sleep(1500 * time.Millisecond) // lines written while attached
	cancel(sandbox.ErrDetach)
	cancelOther(sandbox.ErrDetach)
	for _, d := range []chan ran{done, doneOther} {
		if r := <-d; !errors.Is(r.err, sandbox.ErrDetached) {
			t.Fatalf("detached run: %v, %+v", r.err, r.res)
		}
	}
	if err := sb1.Close(); err != nil {
		t.Fatal(err)
	}
	detachedAt := time.Now()
	time.Sleep(time.Second) // the job writes on with nobody attached

	sb2, err := sandbox.New(ctx, cfg, testLogger(t), sandbox.WithKeep(func(id string) bool { return id == "kept" }))
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	if got := sb2.Adopted(ctx); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("adopted %v, want [kept]", got)
	}
	var stdout, stderr, out bytes.Buffer
	pid := 0 // OnStart: a service's port is reached through it
	res, err := sb2.Reattach(ctx, sandbox.Job{ID: "kept", Stdout: &stdout, Stderr: &stderr, Output: &out, OnStart: func(p int) { pid = p }})
	if err != nil {
		t.Fatalf("reattach: %v", err)
	}
	if pid <= 0 {
		t.Fatalf("OnStart told pid %d of the re-attached job", pid)
	}
	t.Logf("re-attached %s after %s without a process: exit %d reason %s cpu %s wall %s", res.Container, time.Since(detachedAt), res.ExitCode, res.Reason, res.CPUTime, res.Wall)
	var want, wantErr strings.Builder
	for i := range 30 {
		fmt.Fprintf(&want, "line %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	if stdout.String() != want.String() || stderr.String() != wantErr.String() {
		t.Fatalf("streams after re-attach:\n%q\n%q", stdout.String(), stderr.String())
	}
	if !strings.HasPrefix(want.String(), first.String()) || first.Len() == 0 {
		t.Fatalf("first process saw %q", first.String())
	}
	if res.ExitCode != 3 || res.Reason != sandbox.ReasonExited || res.CPUTime <= 0 || res.PeakMemory <= 0 {
		t.Fatalf("result %+v", res)
	}
	if res.StdoutBytes != int64(want.Len()) || res.Output.Files != 1 || res.Output.SHA256 != fmt.Sprintf("sha256:%x", sha256.Sum256(out.Bytes())) {
		t.Fatalf("counts %d, output %+v", res.StdoutBytes, res.Output)
	}
	if _, err := sb2.Reattach(ctx, sandbox.Job{ID: "dropped"}); !errors.Is(err, sandbox.ErrNoJob) {
		t.Fatalf("a job not kept: %v, want ErrNoJob (removed at New)", err)
	}
	// Only sb2's shared-shim anchor may be there (shimgroup.go).
	list, err := sb2.Client().Containers(namespaces.WithNamespace(ctx, cfg.Namespace), notAnchor)
	if err != nil || len(list) != 0 {
		t.Fatalf("containers left: %d (%v)", len(list), err)
	}
}

// Another node on the same containerd (another state dir) starting while
// a node is down leaves that node's kept job alone: the node, back, adopts
// it. Once the down node's state dir is gone, the other node's start
// removes what it left.
func TestOtherNodeLeavesADownNodesJob(t *testing.T) {
	cfg, sb1, img := loggedSandbox(t, "-othernode")
	ctx := context.Background()
	lim := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: 2 * time.Minute}
	run := func(sb *sandbox.Sandbox, id string) chan error {
		rctx, cancel := context.WithCancelCause(ctx)
		done, started := make(chan error, 1), make(chan struct{})
		go func() {
			_, err := sb.Run(rctx, sandbox.Job{ID: id, Image: img.Name, Args: []string{"sh", "-c", "sleep 2; echo done"}, Limits: lim,
				OnStart: func(int) { close(started) }})
			done <- err
		}()
		waitStarted(t, started)
		cancel(sandbox.ErrDetach)
		return done
	}
	if err := <-run(sb1, "kept"); !errors.Is(err, sandbox.ErrDetached) {
		t.Fatalf("detached run: %v", err)
	}
	sb1.Close() // the node is down, its job runs on
	other := cfg
	other.StateDir = t.TempDir()
	sbOther, err := sandbox.New(ctx, other, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	list, err := sbOther.Client().Containers(namespaces.WithNamespace(ctx, cfg.Namespace), notAnchor)
	if err != nil || len(list) != 1 {
		t.Fatalf("after another node's start: %d containers (%v); want the down node's job left", len(list), err)
	}
	sb2, err := sandbox.New(ctx, cfg, testLogger(t), sandbox.WithKeep(func(id string) bool { return id == "kept" }))
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	res, err := sb2.Reattach(ctx, sandbox.Job{ID: "kept", Stdout: &stdout})
	if err != nil || res.ExitCode != 0 || stdout.String() != "done\n" {
		t.Fatalf("the node back re-attached: %+v %v %q", res, err, stdout.String())
	}
	// Down again with a job, and its state dir gone for good.
	if err := <-run(sb2, "left"); !errors.Is(err, sandbox.ErrDetached) {
		t.Fatalf("detached run: %v", err)
	}
	sb2.Close()
	if err := os.RemoveAll(filepath.Join(cfg.StateDir, "owners")); err != nil {
		t.Fatal(err)
	}
	if err := sbOther.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	list, err = sbOther.Client().Containers(namespaces.WithNamespace(ctx, cfg.Namespace), notAnchor)
	if err != nil || len(list) != 0 {
		t.Fatalf("a node gone for good: %d containers left (%v)", len(list), err)
	}
	sbOther.Close()
}

// notAnchor filters out the live Sandboxes' shared-shim anchors.
const notAnchor = `labels."blackbox.sandbox/role"!="shim-anchor"`

// waitStarted waits for a job's OnStart: a detach before its task started
// ends the run with the cancellation (there is nothing to detach), and a
// busy machine (CI runs every package at once) can take seconds to get
// there.
func waitStarted(t *testing.T, started <-chan struct{}) {
	t.Helper()
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the job did not start within a minute")
	}
}
