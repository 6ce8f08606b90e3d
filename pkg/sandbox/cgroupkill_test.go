package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// killCgroup kills what a cgroup.procs lists until it lists nothing; a
// cgroup that is not there has nothing to kill; garbage is an error.
func TestKillCgroup(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	t.Cleanup(func() { cgroupRoot = old })

	if err := killCgroup("/ns/gone", time.Second); err != nil {
		t.Errorf("missing cgroup: %v", err)
	}
	if err := killCgroup("", time.Second); err == nil {
		t.Error("empty path: no error")
	}

	dir := filepath.Join(root, "pids", "ns", "job")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	procs := filepath.Join(dir, "cgroup.procs")
	os.WriteFile(procs, []byte("12x\n"), 0o600)
	if err := killCgroup("/ns/job", time.Second); err == nil {
		t.Error("garbage in cgroup.procs: no error")
	}

	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	os.WriteFile(procs, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		os.WriteFile(procs, nil, 0o600) // the kernel's part: an ended process leaves the cgroup
		exited <- err
	}()
	if err := killCgroup("/ns/job", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Error("the process exited by itself, not killed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the process was not killed")
	}
}
