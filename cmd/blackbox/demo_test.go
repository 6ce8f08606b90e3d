//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestDemo runs deploy/demo.sh, what `make demo` runs (the README's first
// command): a private containerd and btcd, three sellers, a buyer, a job,
// and the seller's payout confirmed on chain. Its build dir is a fresh one
// holding this test's blackbox and btcd, so the demo's state is its own.
func TestDemo(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the whole demo (containerd, btcd, four processes): not in -short")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the demo needs root (containerd), and CI runs as root")
		}
		t.Skip("the demo needs root (containerd)")
	}
	bin, btcd := binary(t), btcdtest.Binary()
	if btcd == "" {
		t.Fatal("no btcd: run make deps")
	}
	build := t.TempDir()
	if err := os.MkdirAll(filepath.Join(build, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"blackbox": bin, "btcd": btcd, "btcctl": filepath.Join(filepath.Dir(btcd), "btcctl"),
	} {
		abs, err := filepath.Abs(target)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(build, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "../../deploy/demo.sh", build)
	cmd.Env = append(os.Environ(), "BTCD_BIN="+btcd)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "payout confirmed on chain.") {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "\x1b[") {
		t.Errorf("the demo wrote escape codes to a pipe:\n%s", out)
	}
}
