//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/containerd/containerd"
)

// market is a real market on this machine for a test: a containerd, a btcd
// regtest node with a miner making a block every half second, and the
// environment every blackbox node of the test runs with.
type market struct {
	t    testing.TB
	bin  string
	sock string // containerd
	btcd *btcdtest.Harness
	env  []string
}

// containerdSocket is the containerd the tests use: make test's
// (BLACKBOX_TEST_CONTAINERD), else a private one started for this test.
func containerdSocket(t testing.TB) string {
	t.Helper()
	if s := os.Getenv("BLACKBOX_TEST_CONTAINERD"); s != "" {
		return s
	}
	return sandboxtest.StartContainerd(t)
}

func newMarket(t testing.TB) *market { return newMarketMining(t, 500*time.Millisecond) }

// newMarketMining is newMarket with a block every `every`; 0 mines
// nothing after the start (a quiet chain, for idle measurements).
func newMarketMining(t testing.TB, every time.Duration) *market {
	t.Helper()
	if testing.Short() {
		t.Skip("a real market (containerd, btcd, processes): not in -short")
	}
	m := &market{t: t, bin: binary(t)}
	sock := containerdSocket(t)
	m.sock = sock
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
		// Each node's dashboard on a free port, not all on 7461.
		"BLACKBOX_DASHBOARD_ADDR=127.0.0.1:0",
		// No close policy: the tests close channels when they mean to
		// (TestClosePolicyPayout turns it on).
		"BLACKBOX_PAYMENT_CLOSE_AT=0", "BLACKBOX_PAYMENT_CLOSE_IDLE=0s",
	}
	if every == 0 {
		return m
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
			case <-time.After(every):
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
		var bal api.Balance
		if err == nil && json.Unmarshal([]byte(out), &bal) == nil && bal.Spendable > 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the wallet of %s never saw its funds\n%s", p.dir, p.logs.String())
}

// daemon is a `blackbox serve` a test may kill -9 and start again on the
// same data dir.
type daemon struct {
	*proc
	m      *market
	prefix []string // runs the binary through it (a netlab host's nsenter), if set
	env    []string
	args   []string
	listen string
	exited chan struct{}
	err    error
	ready  time.Duration // from exec to the API's first answer, last start
}

// daemon starts `blackbox serve` on a fresh data dir with the market's
// environment plus extra; the test's cleanup stops it (SIGTERM) if it runs.
func (m *market) daemon(extra []string, args ...string) *daemon {
	m.t.Helper()
	return m.daemonIn(nil, "", extra, args...)
}

// daemonIn is daemon run through a command prefix (a netlab host's nsenter),
// listening on listen (TCP; "" is loopback on a free port).
func (m *market) daemonIn(prefix []string, listen string, extra []string, args ...string) *daemon {
	t := m.t
	t.Helper()
	d := &daemon{m: m, prefix: prefix, listen: listen, env: append(append([]string(nil), m.env...), extra...), args: args,
		proc: &proc{dir: t.TempDir(), logs: &bytes.Buffer{}}}
	d.start()
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("BLACKBOX_TEST_QUIET") == "" {
			t.Logf("log of %s:\n%s", d.dir, tail(d.logs.String(), 60))
		}
		if d.running() {
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(15 * time.Second):
				d.cmd.Process.Kill()
				<-d.exited
				t.Errorf("serve %s ignored SIGTERM\n%s", d.dir, d.logs.String())
			}
		}
	})
	return d
}

func (d *daemon) start() {
	t := d.m.t
	t.Helper()
	// A restart listens where the daemon listened before, as a configured
	// node would.
	if d.listen == "" {
		d.listen = "/ip4/127.0.0.1/tcp/" + freePort(t)
	}
	argv := append([]string{"serve", "--data-dir", d.dir, "--listen", d.listen}, d.args...)
	name := d.m.bin
	if len(d.prefix) > 0 {
		name, argv = d.prefix[0], slices.Concat(d.prefix[1:], []string{d.m.bin}, argv)
	}
	cmd := exec.Command(name, argv...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	d.waitAPI(began)
}

// waitAPI polls the daemon's API in this process every 10ms until it
// answers (its Start has returned: wallet open, engines up) and records in
// d.ready how long that took since began; waitStatus then reports what
// went wrong if it never does.
func (d *daemon) waitAPI(began time.Time) {
	c := d.api()
	for time.Since(began) < time.Minute {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(ctx)
		cancel()
		if err == nil {
			d.ready = time.Since(began)
			return
		}
		select {
		case <-d.exited:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill is kill -9.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// stop is a clean shutdown: SIGTERM, and serve must exit 0.
func (d *daemon) stop() {
	t := d.m.t
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.kill()
		t.Fatalf("serve %s ignored SIGTERM\n%s", d.dir, d.logs.String())
	}
	if d.err != nil {
		t.Fatalf("serve %s did not stop cleanly: %v\n%s", d.dir, d.err, d.logs.String())
	}
}

func (d *daemon) api() *api.Client { return api.NewClient(d.dir) }

func (d *daemon) peerID() string { return waitStatus(d.m.t, d.m.bin, d.proc).PeerID }

// bootAddr is the daemon's TCP address with its peer ID, for --bootstrap.
func (d *daemon) bootAddr() string {
	s := waitStatus(d.m.t, d.m.bin, d.proc)
	for _, a := range s.Addrs {
		if strings.Contains(a, "/tcp/") && strings.Contains(a, "/p2p/") {
			return a
		}
	}
	for _, a := range s.Addrs {
		if strings.Contains(a, "/tcp/") {
			return a + "/p2p/" + s.PeerID
		}
	}
	d.m.t.Fatalf("no TCP address in %v", s.Addrs)
	return ""
}

// cli runs the blackbox CLI against the daemon's data dir.
func (d *daemon) cli(args ...string) (string, error) {
	return runCLI(d.m.t, d.m.bin, append([]string{"--data-dir", d.dir}, args...)...)
}

// waitMarket waits until the buyer sees n offers.
func (m *market) waitMarket(buyer *daemon, n int) {
	m.t.Helper()
	if seen, err := seesMarket(buyer, n, 60*time.Second); seen < n {
		m.t.Fatalf("the buyer sees %d offers (err %v), want %d\n%s", seen, err, n, buyer.logs.String())
	}
}

// seesMarket asks buyer's market until it sees n offers or within has
// passed, and returns the last count.
func seesMarket(buyer *daemon, n int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		offers, err := buyer.api().Market(context.Background(), api.MarketRequest{TimeoutSeconds: 5})
		if err == nil && len(offers) >= n || time.Now().After(deadline) {
			return len(offers), err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// busybox writes the test job image (a docker archive of busybox) into dir.
func busybox(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "job.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandboxtest.WriteBusyboxImage(f, sandboxtest.DockerArchive); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// job reads a buyer's job through the daemon's API.
func (d *daemon) job(id string) *contract.JobStatus {
	d.m.t.Helper()
	j, err := d.api().Job(context.Background(), id)
	if err != nil {
		d.m.t.Fatalf("job %s: %v\n%s", id, err, d.logs.String())
	}
	return j
}

// contractRec is the seller's record of contract id.
func (d *daemon) contractRec(id string) *contract.Record {
	d.m.t.Helper()
	cs, err := d.api().Contracts(context.Background())
	if err != nil {
		d.m.t.Fatalf("contracts: %v", err)
	}
	for _, r := range cs.Contracts {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// channelWith is the daemon's channel with peer.
func (d *daemon) channelWith(peerID string) *payment.Channel {
	d.m.t.Helper()
	list, err := d.api().Channels(context.Background())
	if err != nil {
		d.m.t.Fatalf("channels: %v", err)
	}
	for _, c := range list {
		if c.Peer == peerID {
			return c
		}
	}
	return nil
}

// closeOnChain closes the seller's channel ch with `blackbox channel
// close`, waits until the close confirms, and checks the transaction on
// chain: it spends the channel's funding output and pays the seller's
// payout script exactly paid minus the close fee fixed at open, and the
// rest (capacity - paid) back to the buyer. It returns the payout.
func (m *market) closeOnChain(seller *daemon, ch *payment.Channel, paid int64) int64 {
	t := m.t
	t.Helper()
	if ch.Paid != paid {
		t.Fatalf("channel %s holds %d sats, want %d", ch.ID, ch.Paid, paid)
	}
	out, err := seller.cli("channel", "close", ch.ID)
	if err != nil {
		t.Fatalf("channel close: %v: %s\n%s", err, out, seller.logs.String())
	}
	f := strings.Fields(out)
	txid, err := chainhash.NewHashFromStr(f[len(f)-1])
	if err != nil {
		t.Fatalf("channel close printed %q: %v", out, err)
	}
	waitFor(t, 60*time.Second, "the close to confirm", func() bool {
		c := seller.channelWith(ch.Peer)
		return c != nil && c.State == payment.StateClosed
	})
	tx, err := m.btcd.Client().GetRawTransactionVerbose(txid)
	if err != nil {
		t.Fatalf("close tx %s: %v", txid, err)
	}
	if tx.Confirmations < 1 {
		t.Fatalf("close tx %s has %d confirmations", txid, tx.Confirmations)
	}
	if len(tx.Vin) != 1 || tx.Vin[0].Txid+":"+strconv.Itoa(int(tx.Vin[0].Vout)) != ch.ID {
		t.Fatalf("close tx %s does not spend channel %s: %+v", txid, ch.ID, tx.Vin)
	}
	raw, err := m.btcd.Client().GetRawTransaction(txid)
	if err != nil {
		t.Fatal(err)
	}
	var payout, back int64 = -1, -1
	for _, o := range raw.MsgTx().TxOut {
		switch {
		case bytes.Equal(o.PkScript, ch.SellerScript):
			payout = o.Value
		case bytes.Equal(o.PkScript, ch.BuyerScript):
			back = o.Value
		default:
			t.Fatalf("close tx %s pays an unknown script %x", txid, o.PkScript)
		}
	}
	if ch.CloseFee <= 0 || payout != paid-ch.CloseFee {
		t.Fatalf("close tx %s pays the seller %d sats, want %d paid - %d close fee", txid, payout, paid, ch.CloseFee)
	}
	if back != ch.Capacity-paid {
		t.Fatalf("close tx %s returns %d sats to the buyer, want %d", txid, back, ch.Capacity-paid)
	}
	t.Logf("close tx %s: %d sats to the seller (%d paid - %d fee), %d back to the buyer", txid, payout, paid, ch.CloseFee, back)
	return payout
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// jobContainers counts the containers containerd holds for a contract.
func (m *market) jobContainers(contractID string) int {
	n := 0
	m.eachJobContainer(contractID, func(context.Context, containerd.Container) bool { n++; return true })
	return n
}

// jobTaskStatus is the status of the task of the first container
// containerd holds for a contract ("" when it has none, or no task).
func (m *market) jobTaskStatus(contractID string) containerd.ProcessStatus {
	var status containerd.ProcessStatus
	m.eachJobContainer(contractID, func(ctx context.Context, c containerd.Container) bool {
		task, err := c.Task(ctx, nil)
		if err != nil {
			return true
		}
		if st, err := task.Status(ctx); err == nil {
			status = st.Status
		}
		return false
	})
	return status
}

// eachJobContainer calls f with each container containerd holds for a
// contract (by the sandbox's job label) until f returns false.
func (m *market) eachJobContainer(contractID string, f func(context.Context, containerd.Container) bool) {
	t := m.t
	t.Helper()
	c, err := containerd.New(m.sock, containerd.WithDefaultNamespace("blackbox"))
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	defer c.Close()
	ctx := context.Background()
	list, err := c.Containers(ctx)
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	for _, ct := range list {
		labels, err := ct.Labels(ctx)
		if err == nil && labels["blackbox.sandbox/job"] == contractID && !f(ctx, ct) {
			return
		}
	}
}
