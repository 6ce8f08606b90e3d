//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// chmodFor sets dir's mode for the test and restores it after.
func chmodFor(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, st.Mode().Perm()) })
}

// When the jobs' remapped root cannot traverse a directory above
// containerd's state (as /run/containerd left 0600 by a private
// containerd's shims, issue 9 bug 11), userns "auto" runs jobs without the
// remap, with a warning, and "on" refuses with the fix; Diagnose's probe
// job says so. Two places: the socket's directory, which New checks, and
// containerd's state directory below it, which only a job finds out about.
func TestUserNSUnreachableState(t *testing.T) {
	needDaemon(t)
	// A containerd of its own: the test makes its state unreachable, which
	// would break the jobs of other packages' tests sharing make test's.
	sock := sandboxtest.StartContainerd(t)
	sockDir := filepath.Dir(sock)
	stateDir := filepath.Join(sockDir, "state") // containerd.sh's layout
	testConfig := func(stateDir string) sandbox.Config {
		cfg := testConfig(stateDir)
		cfg.Address = sock
		return cfg
	}
	sharedDir := t.TempDir()
	sb0, err := sandbox.New(context.Background(), testConfig(sharedDir), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb0.Close()
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		t.Fatal(err)
	}
	image, err := sb0.ImportImage(context.Background(), bytes.NewReader(tarball), "")
	if err != nil {
		t.Fatal(err)
	}
	img := image.Name
	runs := func(t *testing.T, sb *sandbox.Sandbox) {
		t.Helper()
		var buf bytes.Buffer
		res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Stdout: &buf,
			Args:   []string{"sh", "-c", "cat /proc/self/uid_map; echo hi > /out/f"},
			Limits: sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute}})
		if err != nil || res.ExitCode != 0 || res.Output.Files != 1 {
			t.Fatalf("job: %+v %v %q", res, err, buf.String())
		}
		out := buf.String()
		t.Logf("uid_map %s", strings.Join(strings.Fields(out), " "))
	}

	t.Run("socket dir", func(t *testing.T) {
		chmodFor(t, sockDir, 0o700)
		cfg := testConfig(sharedDir)
		sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		if sb.UserNS() {
			t.Errorf("userns auto kept the remap with %s at 0700", sockDir)
		}
		runs(t, sb)

		cfg.UserNS = "on"
		_, err = sandbox.New(context.Background(), cfg, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "chmod o+x "+sockDir) {
			t.Errorf("userns on: err %v, want the fix for %s", err, sockDir)
		}
		t.Logf("userns on refused: %v", err)
		checks := sandbox.Diagnose(context.Background(), cfg)
		if c := find(checks, "userns"); c.Status != sandbox.StatusFail {
			t.Errorf("doctor userns: %+v", c)
		}
	})

	t.Run("state dir", func(t *testing.T) {
		chmodFor(t, stateDir, 0o700)
		cfg := testConfig(sharedDir)
		sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		if !sb.UserNS() {
			t.Fatal("userns off before any job: New cannot see the state dir")
		}
		// What jobs met before the fallback: the runtime cannot reach the
		// root file system.
		err = sb.Probe(context.Background(), "runc")
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("probe with the remap: %v, want permission denied", err)
		}
		t.Logf("probe with the remap: %v", err)
		ok, failed := sb.ProbeRuntimes(context.Background(), "runc")
		if len(ok) != 1 || sb.UserNS() {
			t.Fatalf("auto did not fall back: ok %v failed %v userns %v", ok, failed, sb.UserNS())
		}
		runs(t, sb)

		// Without a probe first (`blackbox sandbox run`), the first job
		// finds out, and runs without the remap.
		sb2, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer sb2.Close()
		runs(t, sb2)
		if sb2.UserNS() {
			t.Error("userns auto kept the remap after a job was denied its root")
		}

		// doctor, with the node's settings: auto warns, on fails with the fix.
		checks := sandbox.Diagnose(context.Background(), cfg)
		if c := find(checks, "probe"); c.Status != sandbox.StatusOK {
			t.Errorf("doctor auto probe: %+v", c)
		}
		if c := findLast(checks, "userns"); c.Status != sandbox.StatusWarn || !strings.Contains(c.Detail, "without") {
			t.Errorf("doctor auto userns: %+v", c)
		}
		cfg.UserNS = "on"
		checks = sandbox.Diagnose(context.Background(), cfg)
		c := find(checks, "probe")
		if c.Status != sandbox.StatusFail || !strings.Contains(c.Detail, "permission denied") || !strings.Contains(c.Fix, "chmod o+x") {
			t.Errorf("doctor on probe: %+v", c)
		}
		t.Logf("doctor: %s: %s; fix: %s", c.Status, c.Detail, c.Fix)
	})
}

func find(checks []sandbox.Check, name string) sandbox.Check {
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	return sandbox.Check{}
}

func findLast(checks []sandbox.Check, name string) sandbox.Check {
	for i := len(checks) - 1; i >= 0; i-- {
		if checks[i].Name == name {
			return checks[i]
		}
	}
	return sandbox.Check{}
}
