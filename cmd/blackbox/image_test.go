//go:build integration

package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// TestImageBuildRunsInTheSandbox: images made by `blackbox image build`,
// from a static binary and from a directory, in both layouts, run under
// `blackbox sandbox run` against real containerd: the job's command, the
// image's entrypoint when the job gives none, and /out.
func TestImageBuildRunsInTheSandbox(t *testing.T) {
	t.Parallel()
	env := sandboxEnv(t)
	bin := binary(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Dir = env, work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("blackbox %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// A static binary (the host's busybox), its entrypoint set.
	out := run("image", "build", "--from", sandboxtest.BusyboxPath, "-o", "bin.tar", "--entrypoint", "/bin/busybox,echo,from-the-entrypoint")
	if !strings.Contains(out, "run it: blackbox submit --image bin.tar") {
		t.Errorf("image build says:\n%s", out)
	}
	if out := run("sandbox", "run", "--data-dir", data, "--image", "bin.tar", "--", "/bin/busybox", "echo", "static-binary-ran"); !strings.Contains(out, "static-binary-ran") {
		t.Errorf("binary image: %s", out)
	}
	if out := run("sandbox", "run", "--data-dir", data, "--image", "bin.tar"); !strings.Contains(out, "from-the-entrypoint") {
		t.Errorf("binary image without a command did not run its entrypoint: %s", out)
	}

	// A directory: busybox, a shell link and a script writing to /out, as
	// an OCI layout.
	root := filepath.Join(work, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(sandboxtest.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), raw, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sh", "echo", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", l)); err != nil {
			t.Fatal(err)
		}
	}
	script := "#!/bin/sh\necho dir-image-ran\necho \"$GREETING\" > /out/greeting.txt\n"
	if err := os.WriteFile(filepath.Join(root, "job.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run("image", "build", "--from", "rootfs", "-o", "dir.tar", "--oci", "--env", "PATH=/bin", "--env", "GREETING=hello-out")
	outDir := filepath.Join(work, "result")
	if out := run("sandbox", "run", "--data-dir", data, "--image", "dir.tar", "--out", outDir, "--", "/job.sh"); !strings.Contains(out, "dir-image-ran") {
		t.Errorf("directory image: %s", out)
	}
	f, err := os.Open(filepath.Join(outDir, "out.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "greeting.txt") {
			b, _ := io.ReadAll(tr)
			found = strings.TrimSpace(string(b)) == "hello-out"
		}
	}
	if !found {
		t.Errorf("/out/greeting.txt missing or wrong in out.tar")
	}
}
