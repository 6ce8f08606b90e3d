//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/cli"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
)

// The contract tests run the whole market in real processes: several
// `blackbox serve` sellers and buyers on loopback, a real containerd and a
// btcd regtest with a miner. Sellers bill every interval (2s) at a price
// that makes an interval worth 200 sats for one core, so that what was paid
// for how many intervals shows in the numbers.
const (
	testInterval = 2 * time.Second
	coreHour     = "360000" // sats: 200 sats per core per 2s interval
)

// sellerEnv is the environment of a seller in these tests.
func sellerEnv(extra ...string) []string {
	return append([]string{
		"BLACKBOX_OFFER_BILLING_INTERVAL=" + testInterval.String(),
		"BLACKBOX_METER_PRICING_CORE_HOUR=" + coreHour,
		"BLACKBOX_CONTRACT_PAY_GRACE=1s",
		"BLACKBOX_METER_PRICING_START_FEE=1000", // sats: a close pays more than dust
		// These tests see what a stop does to a job without resumption
		// (restart_test.go turns it on).
		"BLACKBOX_CONTRACT_RESTART_GRACE=0s",
		// Closes pay the payout address directly, as these tests check
		// (sweep_test.go tests the swept payouts, the default).
		"BLACKBOX_PAYMENT_PAYOUT_SWEEP=false",
	}, extra...)
}

// buyerEnv: a buyer sells nothing (and resumes nothing, as sellerEnv).
var buyerEnv = []string{"BLACKBOX_METER_MAX_CPU=0", "BLACKBOX_CONTRACT_HEARTBEAT_GRACE=1s", "BLACKBOX_CONTRACT_RESTART_GRACE=0s"}

// payoutAddress is a fresh regtest address and its script, for a seller's
// payment.payout_address.
func payoutAddress(t *testing.T) (string, []byte) {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.PayToAddrScript(a)
	if err != nil {
		t.Fatal(err)
	}
	return a.EncodeAddress(), s
}

// submit runs `blackbox submit --json` on the buyer and returns the job
// status of its last event, "done".
func submit(t testing.TB, buyer *daemon, image, out string, flags []string, cmd ...string) *contract.JobStatus {
	t.Helper()
	events, err := submitEvents(t, buyer, image, out, flags, cmd...)
	last := events[len(events)-1]
	if last.Event != "done" || last.Status == nil {
		t.Fatalf("submit --json ended with %+v (%v)", last, err)
	}
	j := last.Status
	if err != nil {
		t.Logf("submit: %v; job %s %s: %s", err, j.ID, j.State, j.Error)
	}
	return j
}

// submitEvents runs `blackbox submit --json` on the buyer and returns its
// events, each line of its output parsed on its own.
func submitEvents(t testing.TB, buyer *daemon, image, out string, flags []string, cmd ...string) ([]cli.Event, error) {
	t.Helper()
	args := append([]string{"submit", "--json", "--image", image, "--out", out}, flags...)
	args = append(append(args, "--"), cmd...)
	c := exec.Command(buyer.m.bin, append([]string{"--data-dir", buyer.dir}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	stdout, err := c.Output()
	events, perr := parseEvents(stdout)
	if perr != nil {
		t.Fatalf("submit --json: %v (exit: %v)\n%s%s", perr, err, stdout, stderr.String())
	}
	return events, err
}

// parseEvents reads submit --json's output: one event per line, at least
// one.
func parseEvents(stdout []byte) ([]cli.Event, error) {
	var events []cli.Event
	for line := range strings.Lines(string(stdout)) {
		var e cli.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Event == "" {
			return nil, fmt.Errorf("a line that is not an event: %q (%v)", line, err)
		}
		events = append(events, e)
	}
	if len(events) == 0 {
		return nil, errors.New("no events")
	}
	return events, nil
}

// submitDetached starts a job and returns its ID at once.
func submitDetached(t *testing.T, buyer *daemon, image string, flags []string, cmd ...string) string {
	t.Helper()
	args := append([]string{"submit", "--detach", "--image", image}, flags...)
	args = append(append(args, "--"), cmd...)
	out, err := buyer.cli(args...)
	if err != nil {
		t.Fatalf("submit --detach: %v: %s\n%s", err, out, buyer.logs.String())
	}
	return strings.TrimSpace(out)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// owed is what n started intervals of the job's contract cost.
func owed(t *testing.T, seller *daemon, contractID string, n uint64) int64 {
	t.Helper()
	r := seller.contractRec(contractID)
	if r == nil || r.Proposal == nil {
		t.Fatalf("seller has no contract %s", contractID)
	}
	return r.Proposal.Owed(n)
}

// TestDemoFlow is `make demo` as a test: three sellers, one funded buyer,
// `blackbox submit` of a busybox job writing /out/hello.txt; the output,
// its digest in the seller's signed receipt, and the seller's payout on
// chain after `blackbox channel close`.
func TestDemoFlow(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	var sellers []*daemon
	scripts := map[string][]byte{} // seller peer ID → payout script
	for i, region := range []string{"eu", "eu", "us"} {
		addr, script := payoutAddress(t)
		args := []string{"--region", region}
		if i > 0 {
			args = append(args, "--bootstrap", sellers[0].bootAddr())
		}
		s := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr), args...)
		sellers = append(sellers, s)
		scripts[s.peerID()] = script
	}
	buyer := m.daemon(buyerEnv, "--bootstrap", sellers[0].bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 3)

	image := busybox(t, work)
	out := filepath.Join(work, "results")
	start := time.Now()
	j := submit(t, buyer, image, out, []string{"--cpus", "1", "--memory", "256MiB", "--time", "1m", "--max-price", "10000"},
		"sh", "-c", "echo hello > /out/hello.txt; echo done")
	t.Logf("submit to result: %s", time.Since(start).Round(time.Millisecond))
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Receipt == nil {
		t.Fatalf("job %s: state %s exit %d error %q\n%s", j.ID, j.State, j.ExitCode, j.Error, buyer.logs.String())
	}
	// The output.
	if b, err := os.ReadFile(filepath.Join(out, "out", "hello.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("out/hello.txt: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "stdout")); err != nil || string(b) != "done\n" {
		t.Fatalf("stdout: %q, %v", b, err)
	}
	// The receipt: signed by the seller that ran the job, for this
	// contract and buyer, with the digests of what came back.
	env, err := os.ReadFile(filepath.Join(out, "receipt"))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := contract.OpenReceipt(env, time.Now())
	if err != nil {
		t.Fatalf("the receipt does not verify: %v", err)
	}
	if _, ok := scripts[rc.Seller.String()]; !ok || rc.Seller != j.Seller || len(j.Attempts) != 1 || j.Attempts[0].Seller != rc.Seller {
		t.Fatalf("receipt signed by %s; the job ran on %s (attempts %+v); sellers %v", rc.Seller, j.Seller, j.Attempts, scripts)
	}
	if rc.ContractID != j.ContractID || rc.Buyer.String() != buyerID || rc.ExitCode != 0 || rc.Reason != "exited" {
		t.Fatalf("receipt %+v; want contract %s, buyer %s, exit 0", rc, j.ContractID, buyerID)
	}
	digests := map[string]string{}
	for _, o := range rc.Outputs {
		digests[o.Name] = o.SHA256
	}
	for name, file := range map[string]string{contract.OutputTar: "out.tar", contract.OutputStdout: "stdout", contract.OutputStderr: "stderr"} {
		if got := sha256File(t, filepath.Join(out, file)); digests[name] != got {
			t.Errorf("receipt says %s is %s; received %s", name, digests[name], got)
		}
	}
	// A receipt altered by one byte does not verify.
	bad := bytes.Clone(env)
	bad[len(bad)/2] ^= 1
	if _, err := contract.OpenReceipt(bad, time.Now()); err == nil {
		t.Error("a tampered receipt verified")
	}

	// The money: the buyer paid what the receipt bills, the seller holds
	// it in its channel, and the payout lands on chain.
	var seller *daemon
	for _, s := range sellers {
		if s.peerID() == rc.Seller.String() {
			seller = s
		}
	}
	if j.Paid <= 0 || j.Paid != rc.Billed || j.Paid != owed(t, seller, j.ContractID, rc.Intervals) {
		t.Fatalf("paid %d, receipt billed %d for %d intervals", j.Paid, rc.Billed, rc.Intervals)
	}
	rec := seller.contractRec(j.ContractID)
	if rec.State != contract.StateSettled || rec.Paid != j.Paid {
		t.Fatalf("seller's contract: %s paid %d; want settled, %d", rec.State, rec.Paid, j.Paid)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.Contracts[j.ContractID] != j.Paid {
		t.Fatalf("seller's channel with the buyer: %+v", ch)
	}
	if !bytes.Equal(ch.SellerScript, scripts[rc.Seller.String()]) {
		t.Fatalf("the channel pays %x, not the seller's payout address %x", ch.SellerScript, scripts[rc.Seller.String()])
	}
	out2, err := seller.cli("contracts", "--json")
	if err != nil || !strings.Contains(out2, j.ContractID) {
		t.Errorf("contracts --json: %v\n%s", err, out2)
	}
	m.closeOnChain(seller, ch, j.Paid)
	// The other sellers ran nothing.
	for _, s := range sellers {
		if s == seller {
			continue
		}
		cs, err := s.api().Contracts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(cs.Contracts, func(r *contract.Record) bool { return r.State == contract.StateRunning }) {
			t.Errorf("seller %s runs a contract nobody asked for", s.dir)
		}
	}
}

// jobFlags: one core for a minute (the sellers' shortest contract), 30
// intervals of 2s.
var jobFlags = []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "10000"}

// waitJob waits until the job satisfies cond and returns it.
// runningJob submits a job detached and waits until it runs and has been
// paid for two intervals: the point where the restart and kill tests
// strike.
func runningJob(t *testing.T, buyer *daemon, image string, flags []string, cmd ...string) (string, *contract.JobStatus) {
	t.Helper()
	id := submitDetached(t, buyer, image, flags, cmd...)
	j := waitJob(t, buyer, id, 60*time.Second, "runs two intervals", func(j *contract.JobStatus) bool {
		return ended(j) || j.State == contract.JobRunning && j.Intervals >= 2
	})
	if j.State != contract.JobRunning {
		t.Fatalf("job %s: %s %q before it ran two intervals", id, j.State, j.Error)
	}
	return id, j
}

func waitJob(t *testing.T, buyer *daemon, id string, timeout time.Duration, what string, cond func(*contract.JobStatus) bool) *contract.JobStatus {
	t.Helper()
	var j *contract.JobStatus
	waitFor(t, timeout, "job "+id+" "+what, func() bool {
		j = buyer.job(id)
		return cond(j)
	})
	return j
}

func ended(j *contract.JobStatus) bool {
	return j.State == contract.JobDone || j.State == contract.JobFailed || j.State == contract.JobCancelled
}

// sellerOf returns the daemon whose peer ID is id.
func sellerOf(t *testing.T, id string, sellers ...*daemon) *daemon {
	t.Helper()
	for _, s := range sellers {
		if s.peerID() == id {
			return s
		}
	}
	t.Fatalf("no seller %s", id)
	return nil
}

// TestSellerKilledMidJob: the seller running a job of several intervals is
// killed (SIGKILL); the buyer notices, retries on the other seller, and the
// job completes there. The first seller was paid only for the intervals it
// delivered plus the one paid in advance; after a restart on the same data
// dir it still holds those payments in its channel.
func TestSellerKilledMidJob(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	s1 := m.daemon(sellerEnv())
	s2 := m.daemon(sellerEnv(), "--bootstrap", s1.bootAddr())
	buyer := m.daemon(buyerEnv, "--bootstrap", s1.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 2)
	image := busybox(t, t.TempDir())

	id, j := runningJob(t, buyer, image, jobFlags, "sh", "-c", "sleep 8; echo survived > /out/x; echo done")
	victim := sellerOf(t, j.Seller.String(), s1, s2)
	other := s1
	if victim == s1 {
		other = s2
	}
	cid := j.ContractID
	killAt := time.Now()
	victim.kill()
	t.Logf("killed seller %s at interval %d of contract %s", victim.dir, j.Intervals, cid[:12])

	j = waitJob(t, buyer, id, 90*time.Second, "ends", ended)
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Receipt == nil {
		t.Fatalf("job %s: %s exit %d %q; want done elsewhere", id, j.State, j.ExitCode, j.Error)
	}
	if len(j.Attempts) != 2 || j.Attempts[0].ContractID != cid || j.Attempts[0].State != contract.StateFailed ||
		j.Attempts[1].Seller.String() != other.peerID() || j.Attempts[1].State != contract.StateSettled || j.Seller != j.Attempts[1].Seller {
		t.Fatalf("attempts %+v; want the killed seller's failed, then the other's settled", j.Attempts)
	}
	if j.Paid != j.Attempts[0].Paid+j.Attempts[1].Paid || j.Attempts[1].Paid != j.Receipt.Billed {
		t.Fatalf("job paid %d; attempts %+v; second receipt billed %d", j.Paid, j.Attempts, j.Receipt.Billed)
	}
	// --max-price (10000) is the whole job's: the retry was offered only
	// what the first attempt left of it (issue 9, bug 3).
	if r := other.contractRec(j.Attempts[1].ContractID); j.Paid > 10000 || r == nil || r.Proposal.Request.MaxPrice != uint64(10000-j.Attempts[0].Paid) {
		t.Fatalf("job paid %d of 10000; the retry's contract %+v; the first attempt paid %d", j.Paid, r, j.Attempts[0].Paid)
	}
	res, err := buyer.cli("job", id, "--json")
	if err != nil || !strings.Contains(res, `"state": "done"`) {
		t.Fatalf("job --json: %v\n%s", err, res)
	}
	out := filepath.Join(t.TempDir(), "res")
	if o, err := buyer.cli("results", id, "--out", out); err != nil {
		t.Fatalf("results: %v %s", err, o)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "out", "x")); string(b) != "survived\n" {
		t.Fatalf("out/x: %q", b)
	}

	// The killed seller comes back on its data dir: the contract failed
	// with the node, the payments it took are kept, no more.
	victim.start()
	rec := victim.contractRec(cid)
	if rec == nil || (rec.State != contract.StateFailed && rec.State != contract.StateSettled) || rec.Started.IsZero() {
		t.Fatalf("restarted seller's contract: %+v", rec)
	}
	delivered := uint64(killAt.Sub(rec.Started) / testInterval)
	paid0 := j.Attempts[0].Paid
	if limit := rec.Proposal.Owed(delivered + 1); paid0 > limit || paid0 < rec.Proposal.Owed(2) {
		t.Fatalf("the buyer paid the killed seller %d sats for %d intervals delivered; want between %d and %d (one in advance)",
			paid0, delivered, rec.Proposal.Owed(2), limit)
	}
	ch := victim.channelWith(buyerID)
	if ch == nil || ch.Contracts[cid] < rec.Proposal.Owed(2) || ch.Contracts[cid] > paid0 || rec.Paid > ch.Contracts[cid] {
		t.Fatalf("restarted seller's channel %+v; contract paid %d; the buyer paid %d", ch, rec.Paid, paid0)
	}
	var cs struct {
		Contracts []*contract.Record `json:"contracts"`
	}
	if o, err := victim.cli("contracts", "--json"); err != nil || json.Unmarshal([]byte(o), &cs) != nil || len(cs.Contracts) != 1 || cs.Contracts[0].Paid != rec.Paid {
		t.Fatalf("contracts --json after restart: %v\n%s", err, o)
	}
	if o, err := victim.cli("channels", "--json"); err != nil || !strings.Contains(o, cid) {
		t.Fatalf("channels --json after restart: %v\n%s", err, o)
	}
	waitFor(t, 10*time.Second, "the killed job's container to be gone", func() bool { return m.jobContainers(cid) == 0 })
	t.Logf("killed after %d intervals: paid %d sats (seller holds %d); retry paid %d", delivered, paid0, ch.Contracts[cid], j.Attempts[1].Paid)
}

// TestBuyerKilledMidJob: the buyer dies (SIGKILL) while its job runs; the
// seller stops the job when the next payment does not come (within an
// interval and the grace), removes its container, and closes the channel
// on chain with the last payment.
func TestBuyerKilledMidJob(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())

	_, j := runningJob(t, buyer, image, jobFlags, "sleep", "50")
	cid := j.ContractID
	if m.jobContainers(cid) != 1 {
		t.Fatalf("no container runs contract %s", cid)
	}
	killAt := time.Now()
	buyer.kill()

	var rec *contract.Record
	waitFor(t, 20*time.Second, "the seller to stop the unpaid job", func() bool {
		rec = seller.contractRec(cid)
		return rec.State != contract.StateRunning
	})
	// The buyer had paid one interval ahead: the seller runs it, then
	// waits the grace (1s) for the next payment.
	if rec.State != contract.StateFailed || rec.Why != "unpaid" {
		t.Fatalf("seller's contract %s (%s); want failed, unpaid", rec.State, rec.Why)
	}
	// Ended is stamped once the container is stopped and the receipt
	// signed: allow 2s for that on a busy machine.
	if took := rec.Ended.Sub(killAt); took > testInterval+time.Second+2*time.Second {
		t.Fatalf("the seller stopped the job %s after the buyer died; want within an interval and the grace (1s)", took)
	}
	if rec.Paid != rec.Proposal.Owed(rec.Intervals) || rec.Intervals < 2 {
		t.Fatalf("seller's contract: paid %d for %d intervals; want %d", rec.Paid, rec.Intervals, rec.Proposal.Owed(rec.Intervals))
	}
	waitFor(t, 10*time.Second, "the unpaid job's container to be gone", func() bool { return m.jobContainers(cid) == 0 })
	waitFor(t, 10*time.Second, "the seller to release the capacity", func() bool {
		var s struct {
			Held struct {
				CPU int64 `json:"cpu_millis"`
			} `json:"held"`
		}
		o, err := seller.cli("status", "--json")
		return err == nil && json.Unmarshal([]byte(o), &s) == nil && s.Held.CPU == 0
	})
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.Contracts[cid] != rec.Paid {
		t.Fatalf("seller's channel %+v; contract paid %d", ch, rec.Paid)
	}
	t.Logf("buyer killed; seller stopped %s later after %d intervals, paid %d", rec.Ended.Sub(killAt).Round(time.Millisecond), rec.Intervals, rec.Paid)
	m.closeOnChain(seller, ch, rec.Paid)
}

// TestSellerRestartMidContract: the only seller is killed (kill -9) while a
// job runs and started again on the same data dir. The contract settles
// with what was paid; every payment the seller took before the kill is in
// its channel after the restart and closes on chain; the seller sells
// again. (The buyer that saw it vanish no longer deals with it: the
// reputation book blocks a seller that abandoned a job, so the second job
// comes from another buyer.)
func TestSellerRestartMidContract(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	// The first buyer has no other seller to move to: it gives up soon
	// rather than wait out contract.busy_wait.
	buyer := m.daemon(append([]string{"BLACKBOX_CONTRACT_BUSY_WAIT=4s"}, buyerEnv...), "--bootstrap", seller.bootAddr())
	buyer2 := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID, sellerID := buyer.peerID(), seller.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.fund(buyer2.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())

	id, j := runningJob(t, buyer, image, jobFlags, "sleep", "50")
	cid := j.ContractID
	before := seller.channelWith(buyerID).Contracts[cid]
	recBefore := seller.contractRec(cid)
	seller.kill()
	seller.start()

	rec := seller.contractRec(cid)
	if rec == nil || rec.State != contract.StateFailed || rec.Why != "node restarted" || rec.Paid < recBefore.Paid {
		t.Fatalf("after the restart the contract is %+v; before the kill it was paid %d", rec, recBefore.Paid)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.State.String() != "open" || ch.Contracts[cid] < before || ch.Contracts[cid] < rec.Paid || ch.Paid != ch.Contracts[cid] {
		t.Fatalf("after the restart the channel is %+v; before the kill it held %d for the contract", ch, before)
	}
	j = waitJob(t, buyer, id, 60*time.Second, "ends", ended)
	if j.State != contract.JobFailed || len(j.Attempts) != 1 || j.Attempts[0].Paid < ch.Paid {
		t.Fatalf("job %s: %s, attempts %+v; want failed (no other seller), paid at least %d", id, j.State, j.Attempts, ch.Paid)
	}
	// The buyer may have signed one more payment the seller never got.
	bch := buyer.channelWith(sellerID)
	if bch == nil || bch.ID != ch.ID || bch.Paid != j.Attempts[0].Paid || bch.Paid-ch.Paid > rec.Proposal.Owed(2)-rec.Proposal.Owed(1) {
		t.Fatalf("buyer's channel %+v paid %d; the seller holds %d", bch, j.Attempts[0].Paid, ch.Paid)
	}
	waitFor(t, 10*time.Second, "the killed job's container to be gone", func() bool { return m.jobContainers(cid) == 0 })

	// The restarted seller sells again.
	m.waitMarket(buyer2, 1)
	j2 := submit(t, buyer2, image, filepath.Join(t.TempDir(), "res"), jobFlags, "sh", "-c", "echo again")
	if j2.State != contract.JobDone || j2.Seller.String() != sellerID {
		t.Fatalf("second job: %s on %s %q", j2.State, j2.Seller, j2.Error)
	}
	t.Logf("contract before the kill: %d sats acknowledged, %d after the restart; buyer paid %d", before, ch.Paid, bch.Paid)
	m.closeOnChain(seller, ch, ch.Paid)
}

// TestConcurrentBuyers: twenty jobs from four buyer nodes (funded
// separately, five `blackbox submit` each at once) against one seller that
// sells two cores, each job taking one core. The seller never holds more
// than it has (sampled from `status --json` and its contracts while the
// jobs run), refuses the rest with reason capacity, and every job it
// accepted completes with its own output.
func TestConcurrentBuyers(t *testing.T) {
	t.Parallel()
	const buyers, perBuyer = 4, 5
	m := newMarket(t)
	seller := m.daemon(sellerEnv("BLACKBOX_METER_MAX_CPU=2"))
	boot := seller.bootAddr()
	var bs []*daemon
	for range buyers {
		b := m.daemon(buyerEnv, "--bootstrap", boot)
		m.fund(b.proc, 1_000_000)
		bs = append(bs, b)
	}
	for _, b := range bs {
		m.waitMarket(b, 1)
	}
	image := busybox(t, t.TempDir())

	// Sample what the seller holds while the jobs run.
	stop := make(chan struct{})
	sampled := make(chan [3]int64, 1)
	go func() {
		var maxHeld, maxRunning, samples int64
		for {
			select {
			case <-stop:
				sampled <- [3]int64{maxHeld, maxRunning, samples}
				return
			case <-time.After(100 * time.Millisecond):
			}
			st, err := seller.api().Status(context.Background())
			if err != nil {
				continue
			}
			maxHeld = max(maxHeld, st.Held.MilliCPU)
			cs, err := seller.api().Contracts(context.Background())
			if err != nil {
				continue
			}
			var running, cpu int64
			for _, r := range cs.Contracts {
				if r.State.Holds() {
					running++
					cpu += int64(r.Proposal.Request.Resources.CPUMillis)
				}
			}
			maxHeld = max(maxHeld, cpu)
			maxRunning = max(maxRunning, running)
			samples++
		}
	}()

	type result struct {
		b   *daemon
		n   int
		out string
		j   *contract.JobStatus
		err error
	}
	results := make(chan result, buyers*perBuyer)
	for bi, b := range bs {
		for k := range perBuyer {
			n := bi*perBuyer + k
			go func() {
				out := filepath.Join(t.TempDir(), "res")
				args := append([]string{"submit", "--json", "--image", image, "--out", out}, jobFlags...)
				args = append(args, "--", "sh", "-c", "sleep 1; echo "+strconv.Itoa(n)+" > /out/n")
				c := exec.Command(m.bin, append([]string{"--data-dir", b.dir}, args...)...)
				var stderr bytes.Buffer
				c.Stderr = &stderr
				stdout, err := c.Output() // exits 125 when the job did not run
				events, perr := parseEvents(stdout)
				if perr != nil || events[len(events)-1].Status == nil {
					results <- result{b, n, out, nil, fmt.Errorf("submit: %v (%v): %s%s", err, perr, stdout, stderr.String())}
					return
				}
				results <- result{b, n, out, events[len(events)-1].Status, nil}
			}()
		}
	}
	var done, refused, refusedCap int
	for range buyers * perBuyer {
		r := <-results
		if r.err != nil {
			t.Errorf("job %d: %v", r.n, r.err)
			continue
		}
		j := r.j
		switch {
		case j.State == contract.JobDone:
			done++
			if b, err := os.ReadFile(filepath.Join(r.out, "out", "n")); err != nil || string(b) != strconv.Itoa(r.n)+"\n" || j.ExitCode != 0 {
				t.Errorf("job %d: exit %d, out/n %q %v", r.n, j.ExitCode, b, err)
			}
		case len(j.Attempts) == 0 && j.State == contract.JobFailed &&
			(strings.Contains(j.Error, "capacity") || strings.Contains(j.Error, "no offer matches")):
			// Never accepted: the seller was full every time the buyer
			// asked (refused for capacity), or its offer showed no spare
			// core when the buyer looked.
			refused++
			if strings.Contains(j.Error, "capacity") {
				refusedCap++
			}
		default:
			t.Errorf("job %d: %s after %d attempts: %q (attempts %+v)", r.n, j.State, len(j.Attempts), j.Error, j.Attempts)
		}
	}
	close(stop)
	s := <-sampled
	t.Logf("%d jobs done, %d never accepted (seller full); the seller held at most %d millicores, %d contracts (%d samples)", done, refused, s[0], s[1], s[2])
	if s[0] > 2000 || s[1] > 2 || s[2] < 10 {
		t.Errorf("the seller held up to %d millicores in %d contracts over %d samples; it has 2000", s[0], s[1], s[2])
	}
	if done < 2 {
		t.Errorf("only %d jobs completed", done)
	}
	cs, unsettled := contractsOf(t, seller)
	for _, r := range unsettled {
		t.Errorf("seller's contract %s is %s (%s)", r.ID[:12], r.State, r.Why)
	}
	if settled := len(cs.Contracts) - len(unsettled); settled != done {
		t.Errorf("seller settled %d contracts; %d jobs done", settled, done)
	}
	if refusedCap > 0 && cs.Rejections["capacity"] == 0 {
		t.Errorf("jobs were refused but the seller counts no capacity refusals: %v", cs.Rejections)
	}
}

// TestConcurrentJobsOneChannel: one buyer runs four jobs of half a core at
// once on a seller with room for all of them (two cores). They share one payment channel (the
// first contract opens it, the others reuse it) and their payments, sent on
// four streams, interleave; every job completes and the channel holds
// exactly what each contract paid.
func TestConcurrentJobsOneChannel(t *testing.T) {
	t.Parallel()
	const jobs = 4
	m := newMarket(t)
	seller := m.daemon(sellerEnv("BLACKBOX_METER_MAX_CPU=2"))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID, sellerID := buyer.peerID(), seller.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())

	var ids []string
	for n := range jobs {
		flags := append(slices.Clone(jobFlags), "--cpus", "500m")
		ids = append(ids, submitDetached(t, buyer, image, flags, "sh", "-c", "sleep 5; echo "+strconv.Itoa(n)))
	}
	var total int64
	for _, id := range ids {
		j := waitJob(t, buyer, id, 90*time.Second, "ends", ended)
		if j.State != contract.JobDone || j.ExitCode != 0 || len(j.Attempts) != 1 || j.Seller.String() != sellerID {
			t.Errorf("job %s: %s exit %d %q, attempts %+v", id, j.State, j.ExitCode, j.Error, j.Attempts)
			continue
		}
		if j.Receipt.Intervals < 3 || j.Paid != j.Receipt.Billed {
			t.Errorf("job %s: paid %d, billed %d for %d intervals", id, j.Paid, j.Receipt.Billed, j.Receipt.Intervals)
		}
		total += j.Paid
	}
	if t.Failed() {
		t.FailNow()
	}
	chans, err := buyer.api().Channels(context.Background())
	if err != nil || len(chans) != 1 {
		t.Fatalf("the buyer has %d channels (%v); want one, shared", len(chans), err)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.ID != chans[0].ID || ch.Paid != total || len(ch.Contracts) != jobs || chans[0].Paid != total {
		t.Fatalf("seller's channel %+v; buyer's paid %d; the jobs paid %d", ch, chans[0].Paid, total)
	}
	m.closeOnChain(seller, ch, total)
}
