//go:build integration

package sandbox_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// TestHelperUnixServer is not a test: run with BLACKBOX_TEST_UNIX_SERVER set,
// it serves that Unix socket until killed (a "containerd" in whatever mount
// namespace it was started in).
func TestHelperUnixServer(t *testing.T) {
	path := os.Getenv("BLACKBOX_TEST_UNIX_SERVER")
	if path == "" {
		return
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		os.Exit(2)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(0)
		}
		c.Close()
	}
}

// TestSandboxRefusesAnotherMountNamespace: a node whose mount namespace is
// not containerd's (as systemd's PrivateTmp= makes one: here, containerd's
// stand-in runs under unshare -m, the same thing from the other side) does
// not start its sandbox, and says why; the doctor check fails with the fix.
func TestSandboxRefusesAnotherMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (unshare -m)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestHelperUnixServer$")
	cmd.Env = append(os.Environ(), "BLACKBOX_TEST_UNIX_SERVER="+sock)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Wait for a connection, not for the file: the socket's file exists
	// from bind(2), before listen(2), and a connect in between is refused
	// (CI failed so once, under load).
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatal("the helper never listened")
		}
	}
	cfg := sandbox.DefaultConfig()
	cfg.Address, cfg.StateDir = sock, t.TempDir()
	_, err = sandbox.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.Is(err, sandbox.ErrMountNamespace) || !strings.Contains(err.Error(), "PrivateTmp=") {
		t.Fatalf("sandbox.New against a containerd in another mount namespace: %v, want ErrMountNamespace", err)
	}
	t.Logf("refused: %v", err)
	var found bool
	for _, c := range sandbox.Diagnose(context.Background(), cfg) {
		if c.Name == "mounts" {
			found = true
			if c.Status != sandbox.StatusFail || !strings.Contains(c.Fix, "PrivateTmp=") {
				t.Fatalf("doctor's mounts check: %+v", c)
			}
		}
	}
	if !found {
		t.Fatal("doctor has no mounts check")
	}
}
