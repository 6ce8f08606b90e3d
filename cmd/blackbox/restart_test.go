//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/containerd/containerd"
)

// Restarts and upgrades lose nothing (issue 12): a job's container belongs
// to containerd, not to the daemon. Each test runs a job of about 20 s
// (ten 2 s intervals) that prints a line a second, stops a daemon mid-job
// and starts it again, and checks that the job completes on the same
// seller with the output of an undisturbed run (its digests), that the
// buyer paid exactly the intervals the receipt bills (its channel, the
// seller's and the receipt agree), and that nothing of the job is left in
// containerd.

// restartJob prints a line a second for 20 s, then writes /out/x.
var restartJob = []string{"sh", "-c", "i=0; while [ $i -lt 20 ]; do echo line $i; i=$((i+1)); sleep 1; done; echo tail > /out/x; echo done"}

// restartStdout is what restartJob prints: the reference run's stdout.
func restartStdout() string {
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String() + "done\n"
}

// restartGrace is the tests' contract.restart_grace.
func restartGrace(d string) []string { return []string{"BLACKBOX_CONTRACT_RESTART_GRACE=" + d} }

// restartMarket is a seller and a funded buyer that resume within grace
// (the buyer has no other seller, and gives up soon without one).
func restartMarket(t *testing.T, grace string) (*market, *daemon, *daemon, string) {
	m := newMarket(t)
	seller := m.daemon(sellerEnv(restartGrace(grace)...))
	buyer := m.daemon(append(append([]string{"BLACKBOX_CONTRACT_BUSY_WAIT=4s"}, buyerEnv...), restartGrace(grace)...), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	return m, seller, buyer, busybox(t, t.TempDir())
}

// checkResumed asserts what every restart test wants of the job id, which
// ran contract cid on seller: done on that seller alone, the reference
// output, paid exactly what the receipt bills, nothing left in
// containerd. It returns the intervals paid beyond the receipt's.
func checkResumed(t *testing.T, m *market, seller, buyer *daemon, id, cid string) int64 {
	t.Helper()
	j := waitJob(t, buyer, id, 120*time.Second, "ends", ended)
	sellerID := seller.peerID()
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Receipt == nil || len(j.Attempts) != 1 ||
		j.Attempts[0].ContractID != cid || j.Attempts[0].Seller.String() != sellerID || j.Attempts[0].State != contract.StateSettled {
		t.Fatalf("job %s: %s exit %d %q, attempts %+v; want done on seller %s in contract %s, settled",
			id, j.State, j.ExitCode, j.Error, j.Attempts, sellerID, cid[:12])
	}
	rc := j.Receipt
	// The output of an undisturbed run: every line, in order, once.
	ref := sha256.Sum256([]byte(restartStdout()))
	refDigest := "sha256:" + hex.EncodeToString(ref[:])
	var stdout contract.Output
	for _, o := range rc.Outputs {
		if o.Name == contract.OutputStdout {
			stdout = o
		}
	}
	got := sha256File(t, filepath.Join(j.ResultDir, contract.OutputStdout))
	if stdout.SHA256 != refDigest || got != refDigest {
		b, _ := os.ReadFile(filepath.Join(j.ResultDir, contract.OutputStdout))
		t.Fatalf("stdout: receipt %s, received %s, reference %s:\n%s", stdout.SHA256, got, refDigest, b)
	}
	out := filepath.Join(t.TempDir(), "res")
	if o, err := buyer.cli("results", id, "--out", out); err != nil {
		t.Fatalf("results: %v %s", err, o)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "out", "x")); string(b) != "tail\n" {
		t.Fatalf("out/x: %q", b)
	}
	// Paid exactly what was delivered: the receipt's intervals (and
	// bytes), the buyer's payments and the seller's channel agree.
	rec := seller.contractRec(cid)
	if rec == nil || rec.State != contract.StateSettled {
		t.Fatalf("seller's contract: %+v", rec)
	}
	perInterval := rec.Proposal.Owed(2) - rec.Proposal.Owed(1)
	sch := seller.channelWith(buyer.peerID())
	bch := buyer.channelWith(sellerID)
	if sch == nil || bch == nil {
		t.Fatalf("channels: seller's %+v, buyer's %+v", sch, bch)
	}
	if rc.Billed != rec.Proposal.Owed(rc.Intervals)+rc.Egress || sch.Contracts[cid] != rc.Billed || bch.Contracts[cid] != j.Paid {
		t.Fatalf("receipt bills %d for %d intervals (+%d egress); the seller's channel holds %d, the buyer paid %d (its channel %d)",
			rc.Billed, rc.Intervals, rc.Egress, sch.Contracts[cid], j.Paid, bch.Contracts[cid])
	}
	extra := (j.Paid - rc.Billed) / perInterval
	if j.Paid != rc.Billed {
		t.Fatalf("the buyer paid %d sats, the receipt bills %d: %d interval(s) of %d sats beyond what was delivered", j.Paid, rc.Billed, extra, perInterval)
	}
	// Nothing of the job is left in containerd.
	waitFor(t, 20*time.Second, "the job's container to be gone", func() bool { return m.jobContainers(cid) == 0 })
	ctr, err := exec.Command("ctr", "--address", m.sock, "-n", "blackbox", "containers", "ls", "-q",
		fmt.Sprintf("labels.%q==%s", "blackbox.sandbox/job", cid)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(ctr)) != "" {
		t.Fatalf("ctr containers ls: %v: %q", err, ctr)
	}
	t.Logf("done on the same seller: %d intervals, billed %d sats, paid %d (%d extra intervals), stdout %s", rc.Intervals, rc.Billed, j.Paid, extra, got[:19])
	return extra
}

// resumedAfter is how long the buyer's log says its stream was away, the
// last time it was resumed.
func resumedAfter(d *daemon) string {
	lines := strings.Split(d.logs.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "job stream resumed") || strings.Contains(lines[i], "buyer resumed its job stream") {
			return lines[i]
		}
	}
	return ""
}

// TestSellerKill9ResumedWithinGrace: the seller is killed (kill -9) mid-job
// and started again within the grace: the job ran on in containerd,
// the seller re-attaches it and the buyer reconnects and pays on.
func TestSellerKill9ResumedWithinGrace(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "60s")
	id, j := runningJob(t, buyer, image, jobFlags, restartJob...)
	cid := j.ContractID
	killAt := time.Now()
	seller.kill()
	if n := m.jobContainers(cid); n != 1 {
		t.Fatalf("after the kill containerd holds %d containers of the job, want it running on", n)
	}
	time.Sleep(2 * time.Second)
	seller.start()
	down := time.Since(killAt)
	waitFor(t, 60*time.Second, "the buyer to resume its stream", func() bool {
		return strings.Contains(buyer.logs.String(), "job stream resumed")
	})
	extra := checkResumed(t, m, seller, buyer, id, cid)
	t.Logf("NUMBERS kill -9 of the seller: the job was %s without its seller daemon (kill to API up again); %d extra intervals paid; %s",
		down.Round(time.Millisecond), extra, resumedAfter(buyer))
}

// TestSellerUpgradeResumed: the seller is stopped with SIGTERM mid-job (an
// upgrade) and started with a newly built binary: the stop leaves the job
// running, the new binary re-attaches it.
func TestSellerUpgradeResumed(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "60s")
	// The upgrade: the same source built again with another version.
	newBin := filepath.Join(t.TempDir(), "blackbox-new")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/blackbox-market/blackbox/internal/cli.Version=v-upgraded", "-o", newBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build the new binary: %v", err)
	}
	id, j := runningJob(t, buyer, image, jobFlags, restartJob...)
	cid := j.ContractID
	stopAt := time.Now()
	seller.stop() // SIGTERM: exits 0, the job runs on
	stopped := time.Since(stopAt)
	if n := m.jobContainers(cid); n != 1 {
		t.Fatalf("after the stop containerd holds %d containers of the job, want it running on", n)
	}
	m.bin = newBin
	seller.start()
	down := time.Since(stopAt)
	var st struct {
		Version string `json:"version"`
	}
	if o, err := seller.cli("status", "--json"); err != nil || json.Unmarshal([]byte(o), &st) != nil || st.Version != "v-upgraded" {
		t.Fatalf("status after the upgrade: %v %q", err, st.Version)
	}
	extra := checkResumed(t, m, seller, buyer, id, cid)
	t.Logf("NUMBERS SIGTERM and upgrade of the seller: stopped in %s; the job was %s without its seller daemon (stop to the new binary's API up); %d extra intervals paid; %s",
		stopped.Round(time.Millisecond), down.Round(time.Millisecond), extra, resumedAfter(buyer))
}

// TestBuyerKill9Resumed: the buyer's daemon is killed (kill -9) mid-job
// and started again: it resumes the job from its store, reconnects to the
// seller, pays on and collects the results.
func TestBuyerKill9Resumed(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "60s")
	id, j := runningJob(t, buyer, image, jobFlags, restartJob...)
	cid := j.ContractID
	killAt := time.Now()
	buyer.kill()
	time.Sleep(2 * time.Second)
	buyer.start()
	down := time.Since(killAt)
	extra := checkResumed(t, m, seller, buyer, id, cid)
	t.Logf("NUMBERS kill -9 of the buyer: the job was %s without its buyer daemon (kill to API up again); %d extra intervals paid; %s",
		down.Round(time.Millisecond), extra, resumedAfter(seller))
}

// TestSellerRestartAfterGrace: a seller down longer than the grace: the
// buyer gives up after the grace and pays no more; the seller, back,
// stops the job as before resumption (its contract fails, settled for
// what was paid) and leaves nothing in containerd.
func TestSellerRestartAfterGrace(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "6s")
	buyerID, sellerID := buyer.peerID(), seller.peerID()
	id, j := runningJob(t, buyer, image, jobFlags, restartJob...)
	cid := j.ContractID
	before := seller.contractRec(cid)
	seller.kill()
	j = waitJob(t, buyer, id, 60*time.Second, "ends", ended)
	if j.State != contract.JobFailed || len(j.Attempts) != 1 || j.Attempts[0].State != contract.StateFailed {
		t.Fatalf("job %s: %s, attempts %+v; want failed (the seller not back within the grace, no other)", id, j.State, j.Attempts)
	}
	time.Sleep(8 * time.Second) // well beyond the grace, counted from the seller's last sign of life
	seller.start()
	rec := seller.contractRec(cid)
	if rec == nil || rec.State != contract.StateFailed || rec.Why != "node restarted" || rec.Paid < before.Paid {
		t.Fatalf("after the restart the contract is %+v; before the kill it was paid %d", rec, before.Paid)
	}
	waitFor(t, 20*time.Second, "the job's container to be gone", func() bool { return m.jobContainers(cid) == 0 })
	ch := seller.channelWith(buyerID)
	bch := buyer.channelWith(sellerID)
	if ch == nil || ch.Contracts[cid] != rec.Paid || bch == nil || bch.Contracts[cid] != j.Attempts[0].Paid ||
		bch.Contracts[cid]-ch.Contracts[cid] > rec.Proposal.Owed(2)-rec.Proposal.Owed(1) {
		t.Fatalf("seller's channel %+v (contract paid %d); buyer's %+v paid %d", ch, rec.Paid, bch, j.Attempts[0].Paid)
	}
	t.Logf("after the grace: the contract failed, %d sats held by the seller, %d paid by the buyer", ch.Contracts[cid], bch.Contracts[cid])
}

// TestSellerDownWhenJobEnds: the seller is killed (kill -9) mid-job and the
// job ends while its daemon is down: the restarted seller finds the task
// exited in containerd, collects its streams and /out, and the buyer gets
// the results and the receipt on the same seller, paying for what ran.
func TestSellerDownWhenJobEnds(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "60s")
	// restartJob's output, all at once after a pause: it ends while the
	// seller is down.
	quick := []string{"sh", "-c", "sleep 5; i=0; while [ $i -lt 20 ]; do echo line $i; i=$((i+1)); done; echo tail > /out/x; echo done"}
	id, j := runningJob(t, buyer, image, jobFlags, quick...)
	cid := j.ContractID
	// Two paid intervals count from the contract's start, not the task's:
	// on a loaded machine the container may still be on its way. Killed
	// before its task started, the seller leaves a task that never exits.
	waitFor(t, 60*time.Second, "the job's task to run", func() bool {
		running := false
		m.eachJobContainer(cid, func(ctx context.Context, c containerd.Container) bool {
			task, err := c.Task(ctx, nil)
			if err != nil {
				return true
			}
			st, err := task.Status(ctx)
			running = err == nil && (st.Status == containerd.Running || st.Status == containerd.Stopped)
			return false
		})
		return running
	})
	seller.kill()
	waitFor(t, 60*time.Second, "the job's task to exit with its seller down", func() bool {
		exited := false
		m.eachJobContainer(cid, func(ctx context.Context, c containerd.Container) bool {
			task, err := c.Task(ctx, nil)
			if err != nil {
				return true
			}
			st, err := task.Status(ctx)
			exited = err == nil && st.Status == containerd.Stopped
			return false
		})
		return exited
	})
	seller.start()
	extra := checkResumed(t, m, seller, buyer, id, cid)
	t.Logf("NUMBERS the job ended with its seller down: %d extra intervals paid", extra)
}
