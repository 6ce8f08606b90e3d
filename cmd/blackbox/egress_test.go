//go:build integration

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// TestEgressBilled: bytes moved are billed, both ways. A seller with an
// egress price of 100,000 sat per GiB is sent a 2 MiB input (and the image,
// unless it holds it) and runs a busybox job that writes 5 MiB to stdout;
// the seller's signed receipt bills the bytes sent and received at that
// price, the buyer
// paid for them with its last payment update (within --max-price), the
// seller's channel holds the egress with the intervals, its earnings count
// it, `jobs` shows it, and the seller's payout lands on chain.
func TestEgressBilled(t *testing.T) {
	t.Parallel()
	const egressGiB = 100_000 // sats per GiB
	const size = 5 << 20
	m := newMarket(t)
	addr, _ := payoutAddress(t)
	// An uplink declared far above what loopback achieves: the measured
	// transfer of the outputs brings the bandwidth on offer down.
	const uplink = 1_000_000_000_000 // 1 Tbit/s
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_METER_PRICING_EGRESS_GIB=100000",
		"BLACKBOX_METER_UPLINK=1Tbit", "BLACKBOX_METER_SAMPLE_INTERVAL=500ms"))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	out := filepath.Join(work, "res")
	// A fresh 2 MiB input is what surely crosses to the seller: the image
	// may be cached already in a containerd other tests share.
	in := filepath.Join(work, "in.bin")
	if err := os.WriteFile(in, randomBytes(t, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	j := submit(t, buyer, busybox(t, work), out, append([]string{"--input", in}, jobFlags...), "sh", "-c", "head -c 5242880 /dev/zero; echo > /out/note")
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Receipt == nil {
		t.Fatalf("job %s: %s exit %d %q\n%s", j.ID, j.State, j.ExitCode, j.Error, buyer.logs.String())
	}
	if st, err := os.Stat(filepath.Join(out, "stdout")); err != nil || st.Size() != size {
		t.Fatalf("stdout: %v, %v", st, err)
	}
	// The receipt, as signed by the seller.
	env, err := os.ReadFile(filepath.Join(out, "receipt"))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := contract.OpenReceipt(env, j.Created.Add(1))
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	var sent uint64
	for _, o := range rc.Outputs {
		sent += o.Size
	}
	// What the buyer sent: the input, and the image unless the seller
	// held it already (a containerd other tests share).
	received := uint64(2 << 20)
	imageCached := false
	for _, line := range strings.Split(seller.logs.String(), "\n") {
		if strings.Contains(line, `msg="image cached, not transferred"`) && strings.Contains(line, "contract="+j.ContractID) {
			imageCached = true
		}
	}
	if !imageCached {
		if j.Request.ImageSize == 0 {
			t.Fatalf("the job's request has no image size: %+v", j.Request)
		}
		received += j.Request.ImageSize
	}
	moved := sent + received
	want := contract.EgressSats(moved, egressGiB*1000)
	if rc.EgressBytes != moved || sent < size || rc.Egress != want || want < 683 {
		t.Fatalf("receipt: %d bytes moved, %d sat; outputs hold %d bytes, the buyer sent %d (image cached: %v), at %d sat/GiB: %d sat",
			rc.EgressBytes, rc.Egress, sent, received, imageCached, egressGiB, want)
	}
	intervals := owed(t, seller, j.ContractID, rc.Intervals)
	if rc.Billed != intervals+rc.Egress || j.Paid != rc.Billed {
		t.Fatalf("billed %d, paid %d; want %d for %d interval(s) + %d egress", rc.Billed, j.Paid, intervals, rc.Intervals, rc.Egress)
	}
	t.Logf("bytes moved: %d sent + %d received (image cached: %v) at %d sat/GiB = %d sat; contract paid %d sat (%d for %d intervals)",
		sent, received, imageCached, egressGiB, rc.Egress, j.Paid, intervals, rc.Intervals)
	// The seller: its record, its channel, its earnings.
	rec := seller.contractRec(j.ContractID)
	if rec.State != contract.StateSettled || rec.Paid != j.Paid || rec.Egress != rc.Egress || rec.EgressBytes != moved {
		t.Fatalf("seller's contract: %s paid %d, egress %d sat for %d bytes", rec.State, rec.Paid, rec.Egress, rec.EgressBytes)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.Contracts[j.ContractID] != j.Paid {
		t.Fatalf("seller's channel with the buyer: %+v; want %d sat for the contract", ch, j.Paid)
	}
	if e := seller.earnings(); e.Today.EarnedSat != j.Paid {
		t.Fatalf("earnings today: %+v; want %d sat, egress included", e.Today, j.Paid)
	}
	// What the buyer's CLI shows.
	o, err := buyer.cli("jobs")
	if err != nil || !strings.Contains(o, "moved ") {
		t.Fatalf("jobs: %v\n%s", err, o)
	}
	o, err = buyer.cli("job", j.ID)
	if err != nil || !strings.Contains(o, "Moved:") {
		t.Fatalf("job: %v\n%s", err, o)
	}
	o, err = buyer.cli("job", "--json", j.ID)
	var js contract.JobStatus
	if err != nil || json.Unmarshal([]byte(o), &js) != nil || js.Receipt == nil || js.Receipt.Egress != rc.Egress {
		t.Fatalf("job --json: %v\n%s", err, o)
	}
	// Bandwidth is real: the seller measured the 5 MiB it sent, and the
	// bandwidth it offers follows the measure.
	measured := 0
	for _, line := range strings.Split(seller.logs.String(), "\n") {
		if i := strings.Index(line, `msg="transfer measured"`); i >= 0 {
			measured++
			t.Logf("seller: %s", line[i:])
		}
	}
	if measured < 2 { // the input received, the outputs sent
		t.Fatalf("the seller measured %d transfers, want 2:\n%s", measured, tail(seller.logs.String(), 30))
	}
	waitFor(t, 30*time.Second, "the offered bandwidth to follow the measured throughput", func() bool {
		st, err := seller.api().Status(context.Background())
		return err == nil && st.OnOffer.Bandwidth > 0 && st.OnOffer.Bandwidth < uplink
	})
	st, _ := seller.api().Status(context.Background())
	t.Logf("bandwidth on offer after the transfer: %d bit/s (declared %d)", st.OnOffer.Bandwidth, int64(uplink))
	// And on chain.
	m.closeOnChain(seller, ch, j.Paid)
}
