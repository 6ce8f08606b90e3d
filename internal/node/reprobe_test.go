//go:build integration

package node

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// TestReprobeRuntimes: a runtime whose probe job ran out of time at start
// (a loaded machine) is probed again once the node runs, on a real
// containerd, and offered as soon as its job runs; one that cannot run
// stays out of the offer, and the runtimes offered before are kept.
func TestReprobeRuntimes(t *testing.T) {
	addr := os.Getenv("BLACKBOX_TEST_CONTAINERD")
	if addr == "" {
		addr = sandboxtest.StartContainerd(t)
	}
	cfg := sandbox.DefaultConfig()
	cfg.Address, cfg.Namespace, cfg.StateDir, cfg.SharedShim = addr, "bb-reprobe-test", t.TempDir(), false
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sb, err := sandbox.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	n := &Node{sandbox: sb, log: log, runtimes: []string{"runc"}, reprobe: []string{"crun", "no-such-runtime"}}
	n.reprobeRuntimes(ctx, []time.Duration{0, time.Millisecond})
	if got := n.offeredRuntimes(); !slices.Equal(got, []string{"runc", "crun"}) {
		t.Fatalf("offered after the later probes: %v, want [runc crun]", got)
	}
}
