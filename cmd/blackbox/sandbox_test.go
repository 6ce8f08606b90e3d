//go:build integration

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// sandboxEnv is the environment of `blackbox sandbox run` against the
// test's containerd.
func sandboxEnv(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("real containerd and processes: not in -short")
	}
	return append(os.Environ(), "BLACKBOX_SANDBOX_ADDRESS="+containerdSocket(t))
}

// TestSandboxRunBurstOneDataDir starts bursts of concurrent `blackbox
// sandbox run` processes on one data directory. Each process's New
// reconciles what dead owners left; none may take a live owner (one whose
// lock file exists but is not locked yet) for dead and delete its job
// directories (issue 9, bug 14: `lchown …/fs/scratch: no such file or
// directory`). Every job must succeed and print its own marker.
func TestSandboxRunBurstOneDataDir(t *testing.T) {
	t.Parallel()
	env := sandboxEnv(t)
	bin := binary(t)
	work := t.TempDir()
	image := busybox(t, work)
	data := filepath.Join(work, "data")
	// Warm: the image is imported once, so the burst races on New and Run.
	warm := exec.Command(bin, "sandbox", "run", "--data-dir", data, "--image", image, "--", "true")
	warm.Env = env
	if out, err := warm.CombinedOutput(); err != nil {
		t.Fatalf("warm-up run: %v\n%s", err, out)
	}
	// A reconciler that probes every owner lock the moment it appears, as
	// another process's New may: an owner lock it can take belongs to a
	// dead owner, so it is removed (what Reconcile does).
	owners := filepath.Join(data, "sandbox", "owners")
	stolen := watchOwnerLocks(t, owners)
	const bursts, perBurst = 3, 40
	var failed []string
	for b := 0; b < bursts; b++ {
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		for i := 0; i < perBurst; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				marker := fmt.Sprintf("job-%d-%d", b, i)
				cmd := exec.Command(bin, "sandbox", "run", "--data-dir", data, "--image", image,
					"--cpus", "0.1", "--memory", "32MiB", "--", "sh", "-c", "echo "+marker+" > /tmp/x && cat /tmp/x")
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), marker) {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s: %v\n%s", marker, err, out))
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
	}
	if n := stolen(); n > 0 {
		t.Errorf("%d owner locks of live sandboxes were visible unlocked (taken for dead)", n)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d concurrent runs failed; first:\n%s", len(failed), bursts*perBurst, failed[0])
	}
	// Nothing of the burst is left behind.
	for _, sub := range []string{"jobs", "owners"} {
		if left, _ := os.ReadDir(filepath.Join(data, "sandbox", sub)); len(left) != 0 {
			t.Errorf("%s left in %s: %d entries", sub, filepath.Join(data, "sandbox"), len(left))
		}
	}
}

// watchOwnerLocks watches dir with inotify and tries to lock each *.lock
// file as soon as it is created or renamed into place; a lock it gets is
// removed, as Reconcile removes a dead owner's. It returns how many it got.
func watchOwnerLocks(t *testing.T, dir string) (stolen func() int64) {
	t.Helper()
	// Non-blocking, so that the runtime's poller serves Read and Close
	// ends it.
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_MOVED_TO); err != nil {
		t.Fatalf("inotify %s: %v", dir, err)
	}
	in := os.NewFile(uintptr(fd), "inotify")
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			k, err := in.Read(buf)
			if err != nil || k <= 0 {
				return // closed
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= k; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				if !strings.HasSuffix(name, ".lock") {
					continue
				}
				p := filepath.Join(dir, name)
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					continue
				}
				if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
					n.Add(1)
					os.Remove(p)
				}
				f.Close()
			}
		}
	}()
	t.Cleanup(func() { in.Close(); <-done })
	return n.Load
}

// `blackbox doctor` runs a probe job with the node's own sandbox settings
// (issue 9, bug 11). With containerd's state unreachable by the jobs'
// remapped root (a directory on the way at 0700, as /run/containerd left
// 0600 by a private containerd's shims), userns "on" fails the probe with
// the fix and the machine cannot sell; "auto" runs jobs without the remap
// and says so. On a healthy host the probe passes.
func TestDoctorProbe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("real containerd and processes: not in -short")
	}
	bin := binary(t)
	// A containerd of its own: the test makes its state unreachable.
	sock := sandboxtest.StartContainerd(t)
	state := filepath.Join(filepath.Dir(sock), "state")
	data := t.TempDir()
	doctor := func(extra ...string) (string, error) {
		cmd := exec.Command(bin, "doctor", "--sandbox", "--data-dir", data)
		cmd.Env = append(os.Environ(), append([]string{"BLACKBOX_SANDBOX_ADDRESS=" + sock}, extra...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := doctor()
	if err != nil || !strings.Contains(out, "OK    probe") || !strings.Contains(out, "This machine can run jobs") {
		t.Fatalf("healthy host: %v\n%s", err, out)
	}
	t.Logf("healthy:\n%s", out)

	st, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(state, st.Mode().Perm())
	out, err = doctor("BLACKBOX_SANDBOX_USERNS=on")
	if err == nil || !strings.Contains(out, "FAIL  probe") || !strings.Contains(out, "permission denied") ||
		!strings.Contains(out, "fix: the jobs' remapped root cannot reach") || !strings.Contains(out, "cannot run jobs") {
		t.Fatalf("userns on, state unreachable: %v\n%s", err, out)
	}
	t.Logf("userns on:\n%s", out)
	out, err = doctor()
	if err != nil || !strings.Contains(out, "OK    probe") || !strings.Contains(out, "WARN  userns") {
		t.Fatalf("userns auto, state unreachable: %v\n%s", err, out)
	}
	t.Logf("userns auto:\n%s", out)
}
