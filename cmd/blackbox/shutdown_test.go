//go:build integration

package main

import (
	"regexp"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// shutdownTrouble is what a clean stop must not log: a subsystem used after
// the one under it closed, a panic, or an error-level line.
var shutdownTrouble = regexp.MustCompile(`(?i)database not open|database is closed|panic:|level=ERROR|use of closed`)

// TestSellerSIGTERMMidJob: the only seller is stopped with SIGTERM while a
// job runs (issue 9, bug 9: Node.Stop closed the host and the database
// while the seller's job handlers and the background loops still ran). The
// seller kills the job, signs its receipt, records it and sends it to the
// buyer before it exits 0, logging no use of closed resources; after a
// restart the contract is completed with its receipt, and every payment the
// seller acknowledged before the stop is in its channel.
func TestSellerSIGTERMMidJob(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	// No other seller: the buyer gives up soon after the stop.
	buyer := m.daemon(append([]string{"BLACKBOX_CONTRACT_BUSY_WAIT=4s"}, buyerEnv...), "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())

	id, j := runningJob(t, buyer, image, jobFlags, "sleep", "50")
	cid := j.ContractID
	acked := seller.channelWith(buyerID).Contracts[cid]
	logStart := seller.logs.Len()
	stopAt := time.Now()
	seller.stop() // SIGTERM; serve must exit 0
	took := time.Since(stopAt)
	stopLog := seller.logs.String()[logStart:]
	if bad := shutdownTrouble.FindAllString(stopLog, -1); len(bad) > 0 {
		t.Errorf("the seller's stop logged %q:\n%s", bad, stopLog)
	}

	// The buyer got the receipt of the killed job: its attempt settled.
	j = waitJob(t, buyer, id, 60*time.Second, "ends", ended)
	if len(j.Attempts) == 0 || j.Attempts[0].ContractID != cid || j.Attempts[0].State != contract.StateSettled {
		t.Fatalf("buyer's attempts %+v; want contract %s settled with the seller's receipt", j.Attempts, cid[:12])
	}

	seller.start()
	rec := seller.contractRec(cid)
	if rec == nil || len(rec.Receipt) == 0 || (rec.State != contract.StateCompleted && rec.State != contract.StateSettled) {
		t.Fatalf("after the restart the seller's contract is %+v; want completed with its receipt", rec)
	}
	rc, err := contract.OpenReceipt(rec.Receipt, time.Now())
	if err != nil || rc.Reason != "killed" {
		t.Fatalf("seller's receipt %+v, %v", rc, err)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.Contracts[cid] < acked || ch.Contracts[cid] != rec.Paid || rc.Billed > rec.Paid {
		t.Fatalf("after the restart the channel holds %v for the contract, its record %d, receipt billed %d; %d were acknowledged before the stop",
			ch, rec.Paid, rc.Billed, acked)
	}
	t.Logf("SIGTERM after %d intervals: stopped in %s; %d sats acknowledged before, %d held after the restart, receipt billed %d",
		rc.Intervals, took.Round(time.Millisecond), acked, ch.Contracts[cid], rc.Billed)
}
