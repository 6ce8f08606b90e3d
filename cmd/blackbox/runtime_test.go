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

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// The runtimes a seller offers are those that run a job on its machine,
// whatever offer.runtimes lists (issue 9, bug 10); a buyer that requires
// one (`submit --runtime`) gets its job run under it, and one no seller
// can run is not contracted at all. Whether a runtime works here is found
// independently with `blackbox sandbox run --runtime` on the same
// containerd; runsc's jobs see gVisor's kernel, the others the host's.
func TestSubmitRuntime(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	image := busybox(t, work)
	var works []string
	for _, rt := range sandbox.Runtimes {
		cmd := exec.Command(m.bin, "sandbox", "run", "--data-dir", filepath.Join(work, "direct"), "--image", image, "--runtime", rt, "--", "true")
		cmd.Env = append(os.Environ(), m.env...)
		if out, err := cmd.CombinedOutput(); err == nil {
			works = append(works, rt)
		} else {
			t.Logf("%s does not run here: %v\n%s", rt, err, tail(string(out), 3))
		}
	}
	if !slices.Contains(works, "runc") {
		t.Fatalf("runc does not run here: %v", works)
	}

	seller := m.daemon(sellerEnv("BLACKBOX_OFFER_RUNTIMES=" + strings.Join(sandbox.Runtimes, ",")))
	buyer := m.daemon(append(slices.Clone(buyerEnv), "BLACKBOX_CONTRACT_BUSY_WAIT=2s"), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	offers, err := buyer.api().Market(context.Background(), api.MarketRequest{TimeoutSeconds: 5})
	if err != nil || len(offers) != 1 {
		t.Fatalf("market: %v %v", offers, err)
	}
	if got := offers[0].Runtimes; !slices.Equal(got, works) {
		t.Errorf("the seller offers %v; what runs here is %v", got, works)
	}

	host, _ := os.ReadFile("/proc/version")
	for _, rt := range sandbox.Runtimes {
		t.Run(rt, func(t *testing.T) {
			out := filepath.Join(work, "out-"+rt)
			flags := []string{"--runtime", rt, "--cpus", "0.5", "--memory", "128MiB", "--time", "1m", "--max-price", "10000"}
			if !slices.Contains(works, rt) {
				args := append([]string{"--data-dir", buyer.dir, "submit", "--image", image, "--out", out}, flags...)
				c := exec.Command(m.bin, append(args, "--", "true")...)
				b, err := c.CombinedOutput()
				if err == nil {
					t.Fatalf("a job requiring %s, which no seller can run, succeeded:\n%s", rt, b)
				}
				t.Logf("refused: %v: %s", err, tail(string(b), 2))
				return
			}
			j := submit(t, buyer, image, out, flags, "cat", "/proc/version")
			if j.State != contract.JobDone || j.ExitCode != 0 {
				t.Fatalf("job under %s: state %s exit %d error %q\n%s", rt, j.State, j.ExitCode, j.Error, tail(seller.logs.String(), 20))
			}
			saw, err := os.ReadFile(filepath.Join(out, "stdout"))
			if err != nil {
				t.Fatal(err)
			}
			onHost := string(saw) == string(host)
			if (rt == "runsc") == onHost {
				t.Errorf("under %s the job saw the kernel %q (host: %q)", rt, saw, host)
			}
			t.Logf("%s: %s", rt, strings.TrimSpace(string(saw)))
		})
	}
}
