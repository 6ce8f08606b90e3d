package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
)

// market is a real market on this machine for a test: a containerd, a btcd
// regtest node with a miner making a block every half second, and the
// environment every blackbox node of the test runs with.
type market struct {
	t    *testing.T
	bin  string
	btcd *btcdtest.Harness
	env  []string
}

// containerdSocket is the containerd the tests use: make test's
// (BLACKBOX_TEST_CONTAINERD), else a private one started for this test.
func containerdSocket(t *testing.T) string {
	t.Helper()
	if s := os.Getenv("BLACKBOX_TEST_CONTAINERD"); s != "" {
		return s
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the market tests need root for containerd, and CI runs as root")
		}
		t.Skip("needs root to run containerd (or set BLACKBOX_TEST_CONTAINERD)")
	}
	script, _ := filepath.Abs("../../deploy/dev/containerd.sh")
	dir := t.TempDir()
	if out, err := exec.Command(script, "start", dir).CombinedOutput(); err != nil {
		t.Fatalf("start containerd: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(script, "stop", dir).Run() })
	return filepath.Join(dir, "containerd.sock")
}

func newMarket(t *testing.T) *market {
	t.Helper()
	if testing.Short() {
		t.Skip("a real market (containerd, btcd, processes): not in -short")
	}
	m := &market{t: t, bin: binary(t)}
	sock := containerdSocket(t)
	m.btcd = btcdtest.Start(t, 30)
	m.env = []string{
		"BLACKBOX_SANDBOX_ADDRESS=" + sock,
		"BLACKBOX_PAYMENT_NETWORK=regtest",
		"BLACKBOX_PAYMENT_RPC_HOST=" + m.btcd.RPCHost,
		"BLACKBOX_PAYMENT_RPC_USER=" + m.btcd.RPCUser,
		"BLACKBOX_PAYMENT_RPC_PASS=" + m.btcd.RPCPass,
		"BLACKBOX_PAYMENT_RPC_NOTLS=true",
		"BLACKBOX_PAYMENT_CONFIRMATIONS=1",
		"BLACKBOX_PAYMENT_FALLBACK_FEE_RATE=2",
		"BLACKBOX_WALLET_PASSPHRASE=test-passphrase",
		// CPU is sold by allocation so that a machine busy with other
		// tests still has something on offer.
		"BLACKBOX_METER_CPU_BASIS=allocatable", "BLACKBOX_METER_RESERVE_CPU=0",
		"BLACKBOX_METER_SAMPLE_INTERVAL=1s", "BLACKBOX_MDNS=false",
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the miner
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
				m.btcd.Generate(1)
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m
}

// node starts `blackbox serve` with the market's environment plus extra.
func (m *market) node(extra []string, args ...string) *proc {
	return serve(m.t, m.bin, append(append([]string(nil), m.env...), extra...), args...)
}

// fund pays sats to the node's wallet and waits until it can spend them.
func (m *market) fund(p *proc, sats int64) {
	t := m.t
	t.Helper()
	waitStatus(t, m.bin, p)
	out, err := runCLI(t, m.bin, "wallet", "address", "--data-dir", p.dir)
	if err != nil {
		t.Fatalf("wallet address: %v: %s\n%s", err, out, p.logs.String())
	}
	addr, err := btcutil.DecodeAddress(strings.TrimSpace(out), btcdtest.Params)
	if err != nil {
		t.Fatalf("wallet address %q: %v", out, err)
	}
	script, _ := txscript.PayToAddrScript(addr)
	if _, _, err := m.btcd.Send(script, sats); err != nil {
		t.Fatalf("fund %s: %v", addr, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, err := runCLI(t, m.bin, "wallet", "balance", "--json", "--data-dir", p.dir)
		if err == nil && !strings.Contains(out, `"spendable_sat":0`) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the wallet of %s never saw its funds\n%s", p.dir, p.logs.String())
}
