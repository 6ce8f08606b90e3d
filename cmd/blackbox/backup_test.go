//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// serveOnce runs `blackbox serve` on dir and expects it to refuse to start:
// it returns the output of a process that exited non-zero by itself.
func serveOnce(t *testing.T, bin, dir string, env []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve on a damaged database kept running\n%s", out)
	}
	if err == nil {
		t.Fatalf("serve on a damaged database exited 0\n%s", out)
	}
	for _, bad := range []string{"panic", "goroutine ", "runtime error"} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("serve on a damaged database crashed (%q)\n%s", bad, out)
		}
	}
	return string(out)
}

// TestRestoreAfterDatabaseLoss (issue 9 bug 13): a seller whose buyer ran a
// job holds the buyer's signed payment in a channel. Its database is
// deleted while it is stopped: serve refuses to start (it does not create
// an empty database and forget the money), `blackbox restore` rebuilds the
// channel from the channel backup, and the restarted seller closes the
// channel on the regtest chain and is paid the full amount.
func TestRestoreAfterDatabaseLoss(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	addr, script := payoutAddress(t)
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS=" + addr))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	j := submit(t, buyer, busybox(t, work), filepath.Join(work, "res"), jobFlags, "sh", "-c", "echo paid")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: %s paid %d %q", j.ID, j.State, j.Paid, j.Error)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.Paid != j.Paid || string(ch.SellerScript) != string(script) {
		t.Fatalf("seller's channel %+v; the buyer paid %d", ch, j.Paid)
	}
	seller.stop()

	db := filepath.Join(seller.dir, "blackbox.db")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	out := serveOnce(t, m.bin, seller.dir, seller.env)
	if !strings.Contains(out, "missing") || !strings.Contains(out, "blackbox restore") {
		t.Fatalf("serve's refusal does not say what happened and what to do:\n%s", out)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("serve re-created the lost database")
	}
	// An emptied database is refused the same way.
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := serveOnce(t, m.bin, seller.dir, seller.env); !strings.Contains(out, "empty") {
		t.Fatalf("serve on an empty database:\n%s", out)
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Fatalf("serve touched the empty database: %v", err)
	}
	os.Remove(db)

	res, err := seller.cli("restore")
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, res)
	}
	if !strings.Contains(res, "1 as seller holding "+strconv.FormatInt(j.Paid, 10)+" sat") {
		t.Fatalf("restore printed %q; want one seller channel holding %d sat", res, j.Paid)
	}
	t.Logf("restore: %s", strings.TrimSpace(res))
	// A second restore would overwrite the new database: refused.
	if o, err := seller.cli("restore"); err == nil || !strings.Contains(o, "move it aside") {
		t.Fatalf("restore over a database: %v %s", err, o)
	}

	seller.start()
	ch2 := seller.channelWith(buyerID)
	if ch2 == nil || ch2.ID != ch.ID || ch2.Paid != j.Paid || string(ch2.BuyerSig) != string(ch.BuyerSig) {
		t.Fatalf("restored channel %+v; want %s paid %d", ch2, ch.ID, j.Paid)
	}
	// The restored seller sells again on the same channel, then closes it
	// for everything it was paid, before and after the loss.
	m.waitMarket(buyer, 1)
	j2 := submit(t, buyer, busybox(t, work), filepath.Join(work, "res2"), jobFlags, "sh", "-c", "echo again")
	if j2.State != contract.JobDone || j2.Paid <= 0 {
		t.Fatalf("job after restore %s: %s paid %d %q", j2.ID, j2.State, j2.Paid, j2.Error)
	}
	ch3 := seller.channelWith(buyerID)
	if ch3 == nil || ch3.ID != ch.ID || ch3.Paid != j.Paid+j2.Paid {
		t.Fatalf("channel after a second job: %+v; want %s paid %d+%d", ch3, ch.ID, j.Paid, j2.Paid)
	}
	m.closeOnChain(seller, ch3, j.Paid+j2.Paid)
}

// TestServeRefusesCorruptDatabase (issue 9 bug 13): a blackbox.db full of
// garbage, or truncated, stops serve with a non-zero exit and a message
// that says what to do, never a bbolt panic; the file is left as it was.
func TestServeRefusesCorruptDatabase(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	env := []string{"BLACKBOX_MDNS=false"}
	dir := t.TempDir()
	// A real node's database: serve once, stop.
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0")
	cmd.Env = append(os.Environ(), env...)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, bin, &proc{cmd: cmd, dir: dir})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, logs)
	}
	db := filepath.Join(dir, "blackbox.db")
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, len(good))
	rand.Read(garbage)
	for name, content := range map[string][]byte{
		"garbage":        garbage,
		"truncated":      good[:len(good)/2],
		"one page":       good[:4096],
		"meta scribbled": append(append([]byte(nil), garbage[:8192]...), good[8192:]...),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(db, content, 0o600); err != nil {
				t.Fatal(err)
			}
			out := serveOnce(t, bin, dir, env)
			if !strings.Contains(out, "damaged") || !strings.Contains(out, "blackbox restore") {
				t.Fatalf("serve's refusal does not say what to do:\n%s", out)
			}
			if after, _ := os.ReadFile(db); string(after) != string(content) {
				t.Fatal("serve changed the damaged database")
			}
			t.Logf("%s", strings.SplitN(out, "\n", 2)[0])
		})
	}
}
