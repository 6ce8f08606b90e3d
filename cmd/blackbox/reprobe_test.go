//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
)

// A runtime whose probe job runs out of time at start (a loaded machine:
// here a crun whose first container takes 8 s to create, against a
// sandbox.probe_timeout of 3 s) is slow, not broken: the seller starts
// without it, probes it again once it runs, and offers it as soon as its
// probe job runs; a buyer that requires it then finds the seller in the
// market and gets its job run under it.
func TestSlowRuntimeJoinsTheOffer(t *testing.T) {
	t.Parallel()
	crun, err := exec.LookPath("crun")
	if err != nil {
		t.Fatalf("crun is not installed (deploy/dev/containerd.sh install installs it): %v", err)
	}
	m := newMarket(t)
	work := t.TempDir()
	image := busybox(t, work)

	// The seller's crun: the first container it creates takes 8 s.
	fake := filepath.Join(work, "bin")
	if err := os.MkdirAll(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(work, "crun-was-slow")
	script := "#!/bin/sh\nfor a in \"$@\"; do\n\tif [ \"$a\" = create ] && [ ! -e " + mark + " ]; then\n\t\t: > " + mark +
		"\n\t\tsleep 8\n\t\tbreak\n\tfi\ndone\nexec " + crun + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(fake, "crun"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The buyer first, so that it likely holds the seller's first offer
	// (without crun) when crun joins it.
	buyer := m.daemon(append(slices.Clone(buyerEnv), "BLACKBOX_CONTRACT_BUSY_WAIT=2s"))
	m.fund(buyer.proc, 1_000_000)
	seller := m.daemon(sellerEnv("BLACKBOX_OFFER_RUNTIMES=runc,crun", "BLACKBOX_SANDBOX_PROBE_TIMEOUT=3s",
		"PATH="+fake+":"+os.Getenv("PATH")), "--bootstrap", buyer.bootAddr())
	m.waitMarket(buyer, 1)
	if offers, err := buyer.api().Market(context.Background(), api.MarketRequest{TimeoutSeconds: 5}); err == nil && len(offers) == 1 {
		t.Logf("the buyer first saw the seller offer %v", offers[0].Runtimes)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("the seller's start probed no crun container: %v", err)
	}
	if !strings.Contains(seller.logs.String(), `msg="runtime not offered: its probe job failed" runtime=crun`) {
		t.Fatalf("the seller's start did not leave crun out:\n%s", tail(seller.logs.String(), 30))
	}
	waitFor(t, 60*time.Second, "the seller to offer crun", func() bool {
		return strings.Contains(seller.logs.String(), `msg="runtime offered: its probe job ran" runtime=crun`)
	})

	// A buyer asking for crun finds it soon, whatever it held: a cached
	// offer that misses is asked for again after offer.MissRefetchAfter
	// (not offer.DefaultCacheMaxAge, a minute).
	since := time.Now()
	var offered []string
	waitFor(t, 30*time.Second, "the buyer to find the seller for crun", func() bool {
		offers, err := buyer.api().Market(context.Background(), api.MarketRequest{Filter: offer.Filter{Runtime: "crun"}, TimeoutSeconds: 5})
		if err != nil || len(offers) != 1 {
			return false
		}
		offered = offers[0].Runtimes
		return true
	})
	t.Logf("the buyer found the seller for crun %s after crun joined its offer", time.Since(since).Round(time.Millisecond))
	if !slices.Equal(offered, []string{"runc", "crun"}) {
		t.Errorf("the seller offers %v, want [runc crun]", offered)
	}

	out := filepath.Join(work, "out")
	j := submit(t, buyer, image, out, []string{"--runtime", "crun", "--cpus", "0.5", "--memory", "128MiB", "--time", "1m", "--max-price", "10000"}, "echo", "under crun")
	if j.State != contract.JobDone || j.ExitCode != 0 {
		t.Fatalf("job under crun: state %s exit %d error %q\n%s", j.State, j.ExitCode, j.Error, tail(seller.logs.String(), 20))
	}
	if b, err := os.ReadFile(filepath.Join(out, "stdout")); err != nil || string(b) != "under crun\n" {
		t.Fatalf("stdout %q, %v", b, err)
	}
}
