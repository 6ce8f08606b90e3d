package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
	}, extra...)
}

// buyerEnv: a buyer sells nothing.
var buyerEnv = []string{"BLACKBOX_METER_MAX_CPU=0", "BLACKBOX_CONTRACT_HEARTBEAT_GRACE=1s"}

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

// submit runs `blackbox submit --json` on the buyer and returns the final
// job status it prints.
func submit(t *testing.T, buyer *daemon, image, out string, flags []string, cmd ...string) *contract.JobStatus {
	t.Helper()
	args := append([]string{"submit", "--json", "--image", image, "--out", out}, flags...)
	args = append(append(args, "--"), cmd...)
	stdout, err := buyer.cli(args...)
	if err != nil {
		t.Fatalf("submit: %v: %s\nbuyer log:\n%s", err, stdout, buyer.logs.String())
	}
	var j contract.JobStatus
	if err := json.Unmarshal([]byte(stdout), &j); err != nil {
		t.Fatalf("submit --json: %v\n%s", err, stdout)
	}
	return &j
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
