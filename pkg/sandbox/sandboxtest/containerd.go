package sandboxtest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// StartContainerd starts a containerd of the test's own with the
// repository's deploy/dev/containerd.sh (root under DIR/root, state under
// DIR/state, socket DIR/containerd.sock), stops it when the test ends and
// returns its socket. DIR and its parent are made 0755: jobs run with their
// root remapped to an unprivileged uid, which must reach containerd's state.
// It needs root: without, the test skips, or fails under CI=true.
func StartContainerd(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("containerd needs root, and CI runs as root")
		}
		t.Skip("needs root to run containerd (or set BLACKBOX_TEST_CONTAINERD)")
	}
	script, err := repoFile("deploy/dev/containerd.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(script, "start", dir).CombinedOutput(); err != nil {
		t.Fatalf("start containerd: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(script, "stop", dir).Run() })
	return filepath.Join(dir, "containerd.sock")
}

// repoFile finds rel in the repository holding the working directory (the
// nearest parent with a go.mod).
func repoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("sandboxtest: no go.mod above the working directory")
		}
		dir = parent
	}
}
