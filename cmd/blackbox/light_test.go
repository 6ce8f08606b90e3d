//go:build integration

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// lightDaemon starts `blackbox serve` on the embedded light client with no
// RPC settings at all: only the wallet passphrase, regtest, and btcd's P2P
// port as its one Bitcoin peer (regtest has no DNS seeds).
func (m *market) lightDaemon(extra []string, args ...string) *daemon {
	m.t.Helper()
	lm := *m
	lm.env = nil
	for _, e := range m.env {
		if !strings.HasPrefix(e, "BLACKBOX_PAYMENT_RPC_") {
			lm.env = append(lm.env, e)
		}
	}
	lm.env = append(lm.env, "BLACKBOX_PAYMENT_BACKEND=neutrino", "BLACKBOX_PAYMENT_PEERS="+m.btcd.P2PHost)
	return lm.daemon(extra, args...)
}

// TestLightMarket: a buyer and a seller on the light client with no RPC
// settings, and a seller on btcd's RPC. The buyer's first job goes to the
// light seller (the cheaper), the second, with the light seller gone, to
// the btcd one; each seller closes its channel and the payout confirms on
// chain. Status says which chain source each node uses and where its fee
// rate came from.
func TestLightMarket(t *testing.T) {
	m := newMarket(t)
	work := t.TempDir()
	light := m.lightDaemon(sellerEnv("BLACKBOX_METER_PRICING_CORE_HOUR=300000"))
	rpc := m.daemon(sellerEnv(), "--bootstrap", light.bootAddr())
	buyer := m.lightDaemon(buyerEnv, "--bootstrap", light.bootAddr())
	for _, c := range []struct {
		d    *daemon
		want string
	}{{light, "regtest via the light client"}, {buyer, "regtest via the light client"}, {rpc, "regtest via btcd"}} {
		out, err := c.d.cli("status")
		if err != nil || !strings.Contains(out, c.want) || !strings.Contains(out, "sat/vB (") {
			t.Fatalf("status of %s: %v, want %q with the fee source\n%s", c.d.dir, err, c.want, out)
		}
	}
	out, _ := buyer.cli("status", "--json")
	if !strings.Contains(out, `"backend": "neutrino"`) || !strings.Contains(out, `"fee_source": "`) {
		t.Fatalf("status --json of the light buyer:\n%s", out)
	}
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 2)

	image := busybox(t, work)
	run := func(seller *daemon) {
		t.Helper()
		id := submitDetached(t, buyer, image, jobFlags, "sh", "-c", "sleep 3; echo hi")
		j := waitJob(t, buyer, id, 90*time.Second, "ends", ended)
		if j.State != contract.JobDone || j.Paid <= 0 {
			t.Fatalf("job %s: state %s paid %d error %q\n%s", j.ID, j.State, j.Paid, j.Error, buyer.logs.String())
		}
		if j.Seller.String() != seller.peerID() {
			t.Fatalf("job %s went to %s, want %s", j.ID, j.Seller, seller.peerID())
		}
		ch := seller.channelWith(buyer.peerID())
		if ch == nil || ch.Contracts[j.ContractID] != j.Paid {
			t.Fatalf("seller's channel with the buyer: %+v", ch)
		}
		payout := m.closeOnChain(seller, ch, ch.Paid)
		t.Logf("job %s on %s: paid %d, payout %d confirmed on chain", j.ID, seller.dir, j.Paid, payout)
	}
	run(light)
	light.stop()
	run(rpc)
}
