//go:build integration

package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
)

// sandboxCLIEnv writes a busybox image and a config pointing at the test
// containerd (BLACKBOX_TEST_CONTAINERD, set by deploy/dev/test.sh) and
// returns the tarball path and the --data-dir.
func sandboxCLIEnv(t *testing.T) (string, string) {
	t.Helper()
	sock := os.Getenv("BLACKBOX_TEST_CONTAINERD")
	if sock == "" || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" && !testing.Short() {
			t.Fatal("BLACKBOX_TEST_CONTAINERD unset or not root under CI")
		}
		t.Skip("needs root and BLACKBOX_TEST_CONTAINERD (deploy/dev/test.sh sets it)")
	}
	dir := t.TempDir()
	tarball := filepath.Join(dir, "job.tar")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandboxtest.WriteBusyboxImage(f, sandboxtest.DockerArchive); err != nil {
		t.Fatal(err)
	}
	f.Close()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o700)
	cfg := "sandbox:\n  address: " + sock + "\n  namespace: bbclitest\n"
	if err := os.WriteFile(filepath.Join(data, "blackbox.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNamespace(t, sock, "bbclitest") })
	return tarball, data
}

// removeNamespace deletes the images of ns, then ns.
func removeNamespace(t *testing.T, sock, ns string) {
	c, err := containerd.New(sock)
	if err != nil {
		t.Log(err)
		return
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	imgs, _ := c.ImageService().List(ctx)
	for _, i := range imgs {
		c.ImageService().Delete(ctx, i.Name, images.SynchronousDelete())
	}
	c.NamespaceService().Delete(context.Background(), ns)
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns)) // runc leaves empty parents
	for _, d := range dirs {
		os.Remove(d)
	}
}

func TestSandboxRunCommand(t *testing.T) {
	tarball, data := sandboxCLIEnv(t)
	code, out, errOut := run(t, "--data-dir", data, "sandbox", "run", "--image", tarball,
		"--cpus", "0.5", "--memory", "64MiB", "--timeout", "10s", "--", "sh", "-c", "echo hi; exit 3")
	if code != 3 || out != "hi\n" || !strings.Contains(errOut, "exit 3 (exited)") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}

	outDir := filepath.Join(t.TempDir(), "out")
	code, out, errOut = run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--json", "--out", outDir,
		"--env", "GREETING=hello", "--", "sh", "-c", "echo $GREETING > /out/g; echo job-stdout")
	var rec struct {
		ExitCode    int      `json:"exit_code"`
		Reason      string   `json:"reason"`
		WallSeconds *float64 `json:"wall_seconds"`
		Limits      struct {
			WallClockSeconds float64 `json:"wall_clock_seconds"`
		} `json:"limits"`
		Output sandbox.Output
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != 0 {
		t.Fatalf("code %d: --json stdout %q: %v (stderr %q)", code, out, err, errOut)
	}
	if rec.Reason != "exited" || rec.Output.Files != 1 || !strings.Contains(errOut, "job-stdout") ||
		rec.WallSeconds == nil || rec.Limits.WallClockSeconds <= 0 || strings.Contains(out, "_ns") {
		t.Errorf("record %+v, stderr %q", rec, errOut)
	}
	if _, err := os.Stat(filepath.Join(outDir, "out.tar")); err != nil {
		t.Error(err)
	}

	code, _, errOut = run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--memory", "0", "--", "true")
	if code != 1 || !strings.Contains(errOut, "memory") {
		t.Errorf("--memory 0: code %d stderr %q", code, errOut)
	}
	code, _, errOut = run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--timeout", "1s", "--", "sleep", "10")
	if code != 137 || !strings.Contains(errOut, "timeout") {
		t.Errorf("timeout: code %d stderr %q", code, errOut)
	}
}

func TestDoctorCommand(t *testing.T) {
	_, data := sandboxCLIEnv(t)
	// --sandbox: the sandbox part alone (the rest needs btcd: see
	// cmd/blackbox's TestDoctorPayments).
	code, out, errOut := run(t, "--data-dir", data, "doctor", "--sandbox", "--json")
	var rep struct {
		CanEarn bool            `json:"can_earn"`
		Checks  []sandbox.Check `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v: %q %q", err, out, errOut)
	}
	if !rep.CanEarn || code != 0 || len(rep.Checks) < 6 {
		t.Errorf("doctor: code %d %+v", code, rep)
	}
	// An unreachable socket is a failure with a fix.
	os.WriteFile(filepath.Join(data, "blackbox.yaml"), []byte("sandbox:\n  address: /nonexistent.sock\n"), 0o600)
	code, out, _ = run(t, "--data-dir", data, "doctor", "--sandbox")
	if code != 1 || !strings.Contains(out, "FAIL  containerd") || !strings.Contains(out, "fix:") {
		t.Errorf("doctor without containerd: code %d\n%s", code, out)
	}
}

func TestSandboxRunInput(t *testing.T) {
	tarball, data := sandboxCLIEnv(t)
	in := t.TempDir()
	os.WriteFile(filepath.Join(in, "in.txt"), []byte("from the buyer\n"), 0o600)
	code, out, errOut := run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--input", in,
		"--", "sh", "-c", "cat /in/in.txt; echo x > /in/new 2>/dev/null || echo read-only")
	if code != 0 || out != "from the buyer\nread-only\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	os.Symlink("/etc/passwd", filepath.Join(in, "pw"))
	code, out, errOut = run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--input", in, "--", "cat", "/in/pw")
	if code != 1 || out != "" || !strings.Contains(errOut, "symlink") {
		t.Errorf("symlink in --input: code %d stdout %q stderr %q", code, out, errOut)
	}
	code, _, errOut = run(t, "--data-dir", data, "sandbox", "run", "--image", tarball, "--input", filepath.Join(in, "nope"), "--", "true")
	if code != 1 || !strings.Contains(errOut, "--input") {
		t.Errorf("missing --input: code %d stderr %q", code, errOut)
	}
}
