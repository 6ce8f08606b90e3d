//go:build integration

package sandbox_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/containerd/containerd/namespaces"
)

// The job reads its input at /in, writes a digest of it to /out, and cannot
// change /in; the caller's files are left as they were.
func TestInputReadOnlyAtIn(t *testing.T) {
	forRuntimes(t, func(t *testing.T, rt string) {
		sb, img := newSandbox(t)
		in := t.TempDir()
		data := bytes.Repeat([]byte("buyer input\n"), 1000)
		// Modes a remapped job root could not read if /in were the caller's dir.
		os.Mkdir(filepath.Join(in, "sub"), 0o700)
		if err := os.WriteFile(filepath.Join(in, "in.txt"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(in, "sub", "b.txt"), []byte("nested\n"), 0o600)
		os.Chmod(filepath.Join(in, "in.txt"), 0o600)
		os.Chmod(filepath.Join(in, "sub"), 0o700)
		os.Chmod(filepath.Join(in, "sub", "b.txt"), 0o600)
		os.Chmod(in, 0o700)

		script := `sha256sum /in/in.txt | cut -d' ' -f1 > /out/digest; cat /in/sub/b.txt;` +
			`echo x > /in/new 2>/dev/null; echo create=$?; echo y >> /in/in.txt 2>/dev/null; echo append=$?;` +
			`rm -f /in/sub/b.txt 2>/dev/null; echo rm=$?; mkdir /in/d 2>/dev/null; echo mkdir=$?;` +
			`stat -c 'mode %a %n' /in /in/sub /in/in.txt; grep ' /in ' /proc/mounts`
		var stdout, stderr, tarball bytes.Buffer
		res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Args: []string{"sh", "-c", script},
			InputDir: in, Runtime: rt, Stdout: &stdout, Stderr: &stderr, Output: &tarball,
			Limits: sandbox.Limits{CPUMillis: 1000, MemoryBytes: 64 << 20, WallClock: 30 * time.Second}})
		if err != nil {
			t.Fatalf("run: %v (stderr %q)", err, stderr.String())
		}
		assertNoTrace(t, sb, res.Container)
		out := stdout.String()
		t.Logf("stdout:\n%s\nstderr: %s", out, stderr.String())
		if res.ExitCode != 0 || res.Reason != sandbox.ReasonExited {
			t.Errorf("exit %d reason %s", res.ExitCode, res.Reason)
		}
		for _, want := range []string{"nested\n", "create=1", "append=1", "rm=1", "mkdir=1",
			"mode 755 /in\n", "mode 755 /in/sub\n", "mode 644 /in/in.txt\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q", want)
			}
		}
		var opts string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 4 && f[1] == "/in" {
				opts = "," + f[3] + ","
			}
		}
		flags := []string{"ro", "nosuid", "nodev", "noexec"}
		if rt == "runsc" {
			// Expected difference: under gVisor /in is the gofer's 9p mount
			// and /proc/mounts shows only ro,noexec of the four; gVisor
			// opens no host device through the gofer, and its setuid
			// bits raise nothing on the host.
			flags = []string{"ro", "noexec"}
		}
		for _, o := range flags {
			if !strings.Contains(opts, ","+o+",") {
				t.Errorf("/in mounted with %q, lacks %s", opts, o)
			}
		}

		sum := sha256.Sum256(data)
		tr := tar.NewReader(&tarball)
		var digest string
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Name == "digest" {
				b, _ := io.ReadAll(tr)
				digest = strings.TrimSpace(string(b))
			}
		}
		if digest != hex.EncodeToString(sum[:]) {
			t.Errorf("/out/digest %q, want %x", digest, sum)
		}

		// The caller's tree is unchanged: same files, contents and modes.
		for p, mode := range map[string]os.FileMode{"": 0o700, "sub": 0o700, "in.txt": 0o600, "sub/b.txt": 0o600} {
			st, err := os.Stat(filepath.Join(in, p))
			if err != nil || st.Mode().Perm() != mode {
				t.Errorf("caller's %q: %v mode %v, want %v", p, err, st.Mode().Perm(), mode)
			}
		}
		if entries, _ := os.ReadDir(in); len(entries) != 2 {
			t.Errorf("caller's dir holds %v", entries)
		}
		if b, _ := os.ReadFile(filepath.Join(in, "in.txt")); !bytes.Equal(b, data) {
			t.Error("caller's input file changed")
		}
	})
}

// Without /in given, the job has none.
func TestNoInputNoIn(t *testing.T) {
	sb, img := newSandbox(t)
	_, out, _ := run(t, sb, img, sandbox.Limits{}, "sh", "-c", "ls -d /in 2>/dev/null || echo none")
	if out != "none\n" {
		t.Errorf("job without input sees /in: %q", out)
	}
}

// Bad input directories (symlinks out, special files, too big, missing) are
// refused with ErrBadJob before anything runs, and leave nothing behind.
func TestInputRefused(t *testing.T) {
	sb, img := newSandbox(t)
	secret := hostSecret(t)

	withFile := func(dir string) {
		os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("ok"), 0o644)
	}
	cases := []struct {
		name  string
		setup func(dir string) string // returns the InputDir
		cap   int64
		msg   string
	}{
		{"symlink to a host file", func(d string) string {
			withFile(d)
			os.Symlink(secret, filepath.Join(d, "link"))
			return d
		}, 0, "symlink"},
		{"symlink to a host dir", func(d string) string {
			os.MkdirAll(filepath.Join(d, "sub"), 0o755)
			os.Symlink("/etc", filepath.Join(d, "sub", "etc"))
			return d
		}, 0, "symlink"},
		{"relative symlink inside", func(d string) string {
			withFile(d)
			os.Symlink("ok.txt", filepath.Join(d, "alias"))
			return d
		}, 0, "symlink"},
		{"fifo", func(d string) string {
			withFile(d)
			if err := syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}, 0, "not a regular file"},
		{"over the cap", func(d string) string {
			os.WriteFile(filepath.Join(d, "a"), make([]byte, 600), 0o644)
			os.WriteFile(filepath.Join(d, "b"), make([]byte, 600), 0o644)
			return d
		}, 1000, "cap"},
		{"a file", func(d string) string { withFile(d); return filepath.Join(d, "ok.txt") }, 0, "not a directory"},
		{"missing", func(d string) string { return filepath.Join(d, "nope") }, 0, "does not exist"},
	}
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.setup(t.TempDir())
			var stdout bytes.Buffer
			res, err := sb.Run(context.Background(), sandbox.Job{Image: img, InputDir: dir, InputCap: c.cap, Stdout: &stdout,
				Args:   []string{"sh", "-c", "cat /in/link /in/sub/etc/passwd 2>/dev/null; echo RAN"},
				Limits: sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute}})
			if !errors.Is(err, sandbox.ErrBadJob) || res != nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("res %+v err %v, want ErrBadJob saying %q", res, err, c.msg)
			}
			t.Logf("refused: %v", err)
			if stdout.Len() > 0 {
				t.Errorf("job ran: %q", stdout.String())
			}
			if jobs, _ := os.ReadDir(filepath.Join(sharedDir, "jobs")); len(jobs) != 0 {
				t.Errorf("job dirs left: %v", jobs)
			}
			if list, _ := sb.Client().Containers(ctx, notAnchor); len(list) != 0 {
				t.Errorf("%d containers left", len(list))
			}
			if b, _ := os.ReadFile(secret); string(b) != "host secret" {
				t.Error("host file changed")
			}
		})
	}
}
