//go:build integration

package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
)

const helperEnv = "BLACKBOX_SANDBOX_CRASH_HELPER"

// crashHelper runs in a child process (the test binary re-executed): it
// starts a long job, prints "RUNNING <container> <pid>" and waits to be
// killed, like a seller's node crashing mid-job.
func crashHelper() {
	stateDir := os.Getenv(helperEnv)
	cfg := sandbox.DefaultConfig()
	cfg.Address = os.Getenv("BLACKBOX_TEST_CONTAINERD")
	cfg.Namespace = os.Getenv("BLACKBOX_SANDBOX_NS")
	cfg.StateDir = stateDir
	ctx := context.Background()
	fail := func(err error) { fmt.Println("ERROR", err); os.Exit(2) }
	sb, err := sandbox.New(ctx, cfg, testLogger(nil))
	if err != nil {
		fail(err)
	}
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		fail(err)
	}
	img, err := sb.ImportImage(ctx, bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	if err != nil {
		fail(err)
	}
	go func() {
		_, err := sb.Run(ctx, sandbox.Job{Image: img.Name, Args: []string{"sh", "-c", "echo data > /out/x; sleep 1000"},
			Limits: sandbox.Limits{CPUMillis: 100, MemoryBytes: 16 << 20, WallClock: time.Hour}})
		fail(fmt.Errorf("job returned: %v", err))
	}()
	cctx := namespaces.WithNamespace(ctx, cfg.Namespace)
	for {
		time.Sleep(50 * time.Millisecond)
		list, _ := sb.Client().Containers(cctx, notAnchor)
		for _, c := range list {
			if task, err := c.Task(cctx, nil); err == nil {
				if st, err := task.Status(cctx); err == nil && st.Status == containerd.Running {
					fmt.Println("RUNNING", c.ID(), task.Pid())
					select {}
				}
			}
		}
	}
}

// A crash of the caller mid-job leaves a running container, a snapshot, a
// cgroup and a scratch mount; the next New cleans all of them.
func TestCrashMidJobIsReconciled(t *testing.T) {
	needDaemon(t)
	stateDir := t.TempDir()
	ns := testNS + "-crash"
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+stateDir, "BLACKBOX_TEST_CONTAINERD="+daemonAddr, "BLACKBOX_SANDBOX_NS="+ns)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "RUNNING ") || strings.HasPrefix(sc.Text(), "ERROR ") {
				line <- sc.Text()
				return
			}
		}
		line <- "EOF"
	}()
	var got string
	select {
	case got = <-line:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("helper did not start its job")
	}
	var id string
	var pid int
	if _, err := fmt.Sscanf(got, "RUNNING %s %d", &id, &pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %s", got)
	}
	// The crash.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	ctx := namespaces.WithNamespace(context.Background(), ns)
	client, err := containerd.New(daemonAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer cleanNamespace(client, ns)
	if _, err := client.LoadContainer(ctx, id); err != nil {
		t.Fatalf("the crash left no container to clean (%v): test is not testing", err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("job process %d not running after the crash: %v", pid, err)
	}

	cfg := testConfig(stateDir)
	cfg.Namespace = ns
	sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()

	if _, err := client.LoadContainer(ctx, id); err == nil {
		t.Error("container still there after reconcile")
	}
	if _, err := client.SnapshotService("overlayfs").Stat(ctx, id); err == nil {
		t.Error("snapshot still there after reconcile")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("job process %d still alive", pid)
	}
	for _, ctl := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctl, ns, id)); err == nil {
			t.Errorf("%s cgroup of %s still there", ctl, id)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), stateDir) {
		t.Error("scratch mount still there")
	}
	for _, sub := range []string{"jobs", "fifo", "owners"} {
		entries, _ := os.ReadDir(filepath.Join(stateDir, sub))
		for _, e := range entries {
			if !strings.Contains(e.Name(), ownerOf(sb)) {
				t.Errorf("%s/%s left behind", sub, e.Name())
			}
		}
	}
	// And the sandbox works after recovery.
	tarball, _ := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	img, err := sb.ImportImage(context.Background(), bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	if err != nil || !img.Cached {
		t.Fatalf("image after crash: %+v %v", img, err)
	}
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img.Name, Args: []string{"true"},
		Limits: sandbox.Limits{CPUMillis: 100, MemoryBytes: 16 << 20, WallClock: time.Minute}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("job after recovery: %+v %v", res, err)
	}
}

// ownerOf returns the owner ID of sb from its state dir's lock file.
func ownerOf(sb *sandbox.Sandbox) string {
	return strings.TrimSuffix(filepath.Base(sb.OwnerLock()), ".lock")
}

// cleanNamespace removes everything in ns, then ns, with its own client
// (the caller's may be closed).
func cleanNamespace(_ *containerd.Client, ns string) {
	c, err := containerd.New(daemonAddr)
	if err != nil {
		return
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	list, _ := c.Containers(ctx, notAnchor)
	for _, ctr := range list {
		if task, err := ctr.Task(ctx, nil); err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
		ctr.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	imgs, _ := c.ImageService().List(ctx)
	for _, i := range imgs {
		c.ImageService().Delete(ctx, i.Name, images.SynchronousDelete())
	}
	for i := 0; i < 50; i++ {
		if err := c.NamespaceService().Delete(context.Background(), ns); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// runc leaves the namespace's (empty) parent cgroups.
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
	for _, d := range dirs {
		os.Remove(d)
	}
}
