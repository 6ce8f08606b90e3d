//go:build integration

package main

import (
	"strings"
	"testing"
	"time"
)

// TestChainSourceGoes: btcd stops under a running node. `wallet address`
// says the chain source does not answer instead of hanging, and the node
// still stops on SIGTERM (d.stop fails the test when it does not within
// 15 s): no btcd call holds up a command or a shutdown.
func TestChainSourceGoes(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	d := m.daemon(nil)
	if out, err := d.cli("wallet", "address"); err != nil {
		t.Fatalf("wallet address with btcd up: %v\n%s", err, out)
	}
	m.btcd.Stop()
	start := time.Now()
	out, err := d.cli("wallet", "address")
	took := time.Since(start)
	if err == nil || !strings.Contains(out, "chain source did not answer") || !strings.Contains(out, "blackbox doctor") {
		t.Errorf("wallet address with btcd down: %v\n%s", err, out)
	}
	t.Logf("wallet address with btcd down answered in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
	// Let the chain loop reach a btcd call that cannot be answered.
	time.Sleep(3 * time.Second)
	start = time.Now()
	d.stop()
	t.Logf("serve stopped %s after SIGTERM with btcd down", time.Since(start).Round(time.Millisecond))
	t.Log(d.logs.String())
}
