//go:build integration

package store_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

const (
	helperEnv = "BLACKBOX_PAYMENT_SELLER_HELPER"
	killAtEnv = "BLACKBOX_PAYMENT_KILL_AT"
	// nodeEnv makes the helper record each payment as the node does
	// beside the channel (sellerRecords), with Later commits held back
	// for an hour, so that a kill always loses them.
	nodeEnv = "BLACKBOX_PAYMENT_NODE_RECORDS"
)

// sellerRecords is what the node's seller records of a payment beside the
// channel, on the same database: the earnings history (before the
// acknowledgement) and the contract's Paid/Intervals (after it), both as
// Later commits (history.paid, Machine.NotePaid).
type sellerRecords struct {
	hist *store.HistoryStore
	m    *contract.Machine
}

func newSellerRecords(t testing.TB, db *store.DB) *sellerRecords {
	t.Helper()
	r := &sellerRecords{hist: store.NewHistoryStore(db), m: contract.NewMachine(store.NewContractStore(db), contract.Timeouts{}, nil, nil)}
	if _, err := r.m.Get(contract.RoleSeller, "job"); err != nil {
		if err := r.m.Create(&contract.Record{ID: "job", Role: contract.RoleSeller, State: contract.StateRunning}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// rebuilt checks, on the database of a seller killed after acknowledging
// an update that paid contract "job" want sats in all, that the records of
// it lag behind (lost with the kill), and that the node's start-up rebuild
// (contract.RaisePaid, HistoryStore.CatchUp, as node rebuildPaid and
// history.reconcile run them) brings both to want.
func rebuilt(t *testing.T, db *store.DB, want int64) {
	t.Helper()
	r := newSellerRecords(t, db)
	rec, err := r.m.Get(contract.RoleSeller, "job")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := r.hist.Contracts([]string{"job"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid >= want || hs["job"] != nil && hs["job"].Cumulative >= want {
		t.Fatalf("before the rebuild the contract says paid %d, the history %+v: the kill lost no record (want < %d)", rec.Paid, hs["job"], want)
	}
	var hadHist int64
	if hs["job"] != nil {
		hadHist = hs["job"].Cumulative
	}
	hadPaid := rec.Paid
	held := map[string]int64{"job": want}
	if _, err := contract.RaisePaid(store.NewContractStore(db), contract.RoleSeller, held); err != nil {
		t.Fatal(err)
	}
	if _, err := r.hist.CatchUp(time.Now(), held, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	rec, _ = r.m.Get(contract.RoleSeller, "job")
	hs, _ = r.hist.Contracts([]string{"job"})
	if rec.Paid != want || hs["job"] == nil || hs["job"].Cumulative != want {
		t.Fatalf("after the rebuild the contract says paid %d, the history %+v; want %d", rec.Paid, hs["job"], want)
	}
	t.Logf("the kill lost the last payments' records (the contract said paid %d, the history %d); rebuilt from the channel: %d", hadPaid, hadHist, want)
}

func payCfg(host, payout string) payment.Config {
	cfg := payment.RegtestConfig()
	cfg.RPCHost, cfg.RPCUser, cfg.RPCPass, cfg.RPCNoTLS = host, "u", "p", true
	cfg.PayoutAddress = payout
	cfg.PayoutSweep = false // the close pays the payout address itself
	cfg.Confirmations = 1
	cfg.SafetyMargin = 6
	cfg.ChannelLifetime = 40
	cfg.FallbackFeeRate = 2
	return cfg
}

func manager(t testing.TB, cfg payment.Config, st payment.ChannelStore, seed byte, f payment.Funder, after func(*payment.Channel)) (*payment.Manager, *payment.BtcdChain) {
	t.Helper()
	chain, err := payment.DialBtcd(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := payment.NewKeyring(bytes.Repeat([]byte{seed}, 32), btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	m, err := payment.NewManager(payment.ManagerConfig{Config: cfg, Chain: chain, Store: st, Keys: keys, Funder: f, AfterPersist: after})
	if err != nil {
		t.Fatal(err)
	}
	return m, chain
}

// TestPaymentSellerHelper is the seller process of TestPaymentKillBeforeAck:
// it reads hex updates on stdin, accepts each (verify + persist) and writes
// "ack SEQ". At the update numbered $BLACKBOX_PAYMENT_KILL_AT it writes
// "persisted SEQ" after the store returned and then hangs before the
// acknowledgement, waiting for SIGKILL.
func TestPaymentSellerHelper(t *testing.T) {
	args := os.Getenv(helperEnv)
	if args == "" {
		t.Skip("helper process for TestPaymentKillBeforeAck")
	}
	f := strings.Fields(args) // dbpath rpchost payout [backup]
	db, err := store.Open(f[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st payment.ChannelStore = store.NewPaymentStore(db)
	if len(f) > 3 {
		// As the node runs it.
		if st, err = payment.NewBackupStore(store.NewPaymentStore(db), f[3]); err != nil {
			t.Fatal(err)
		}
	}
	var killAt uint64
	fmt.Sscan(os.Getenv(killAtEnv), &killAt)
	var recs *sellerRecords
	if os.Getenv(nodeEnv) != "" {
		db.SetLaterDelay(time.Hour)
		recs = newSellerRecords(t, db)
		// The history has begun (a node's very first payment is
		// recorded at once).
		if _, err := recs.hist.RecordPayment(time.Now(), "before", 1); err != nil {
			t.Fatal(err)
		}
	}
	out := bufio.NewWriter(os.Stdout)
	m, _ := manager(t, payCfg(f[1], f[2]), st, 2, nil, func(c *payment.Channel) {
		if c.Seq == killAt {
			fmt.Fprintf(out, "persisted %d\n", c.Seq)
			out.Flush()
			select {} // the kill arrives here: persisted, not acknowledged
		}
	})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		msg, _ := hex.DecodeString(sc.Text())
		u, err := m.AcceptUpdate(context.Background(), "buyer", msg)
		if err == nil && recs != nil {
			err = recs.hist.RecordPaymentLater(time.Now(), u.ContractID, u.ContractAmount)
		}
		if err != nil {
			fmt.Fprintf(out, "refused %v\n", err)
		} else {
			fmt.Fprintf(out, "ack %d\n", u.Seq)
		}
		out.Flush()
		if err == nil && recs != nil {
			if err := recs.m.NotePaid(contract.RoleSeller, u.ContractID, u.ContractAmount, u.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startSeller(t *testing.T, args string, killAt int, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPaymentSellerHelper$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+args, fmt.Sprintf("%s=%d", killAtEnv, killAt)), env...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

func (c *child) send(t *testing.T, u *payment.Update) string {
	t.Helper()
	fmt.Fprintln(c.in, hex.EncodeToString(u.Encode()))
	if !c.out.Scan() {
		t.Fatalf("seller process said nothing: %v", c.out.Err())
	}
	return c.out.Text()
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// sellerChannel is a channel open from a buyer (in memory, in this
// process) to a seller whose database is at dbPath, closed again for a
// seller process to open; btcd regtest runs the chain.
type sellerChannel struct {
	h         *btcdtest.Harness
	cfg       payment.Config
	buyer     *payment.Manager
	c         *payment.Channel
	dbPath    string
	addr      btcutil.Address
	payScript []byte
}

func openSellerChannel(t *testing.T) *sellerChannel {
	t.Helper()
	h := btcdtest.Start(t, 5)
	payKey, _ := btcec.NewPrivateKey()
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payKey.PubKey().SerializeCompressed()), btcdtest.Params)
	payScript, _ := txscript.PayToAddrScript(addr)
	cfg := payCfg(h.RPCHost, addr.EncodeAddress())
	dbPath := t.TempDir() + "/seller.db"
	ctx := context.Background()

	buyer, _ := manager(t, cfg, payment.NewMemStore(), 1, h, nil)
	db, err := store.Open(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seller, _ := manager(t, cfg, store.NewPaymentStore(db), 2, nil, nil)
	terms, _ := seller.SellerTerms()
	c, req, err := buyer.OpenChannel(ctx, payment.OpenParams{Peer: "seller", Seller: terms, Capacity: 500_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptOpen(ctx, "buyer", req.Encode()); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	for _, m := range []*payment.Manager{buyer, seller} {
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	return &sellerChannel{h: h, cfg: cfg, buyer: buyer, c: c, dbPath: dbPath, addr: addr, payScript: payScript}
}

// TestPaymentKillBeforeAck kills the seller's process (SIGKILL) after it has
// persisted an update and before it acknowledged it, then once more while
// an update is in flight, then right after it refused a forged update
// (written while its signature was checked); after each restart nothing
// is lost, nothing forged is taken, the buyer's resend is accepted, and
// the recovered latest update closes on chain. The seller records each
// payment as the node does (earnings history, contract Paid: Later
// commits, held back so that every kill loses them); rebuilt from the
// channel at the end, they match it.
func TestPaymentKillBeforeAck(t *testing.T) {
	o := openSellerChannel(t)
	h, cfg, buyer, c, dbPath, addr, payScript := o.h, o.cfg, o.buyer, o.c, o.dbPath, o.addr, o.payScript
	ctx := context.Background()

	args := strings.Join([]string{dbPath, h.RPCHost, addr.EncodeAddress()}, " ")
	p := startSeller(t, args, 5, nodeEnv+"=1")
	for i := 1; i <= 5; i++ {
		u, err := buyer.Pay(ctx, c.ID, "job", 10_000)
		if err != nil {
			t.Fatal(err)
		}
		got := p.send(t, u)
		want := fmt.Sprintf("ack %d", i)
		if i == 5 {
			want = "persisted 5"
		}
		if got != want {
			t.Fatalf("update %d: seller said %q, want %q", i, got, want)
		}
	}
	p.kill(t) // between persist and acknowledgement of update 5

	// Restart: the unacknowledged update survived; the buyer's resend of
	// its latest update is acknowledged again, without double counting.
	p = startSeller(t, args, 0, nodeEnv+"=1")
	u, _ := buyer.LatestUpdate(c.ID, "job")
	if got := p.send(t, u); got != "ack 5" {
		t.Fatalf("resend after restart: %q", got)
	}
	// Killed with update 6 in flight: the buyer never got an ack, resends.
	u6, _ := buyer.Pay(ctx, c.ID, "job", 10_000)
	fmt.Fprintln(p.in, hex.EncodeToString(u6.Encode()))
	p.kill(t)
	p = startSeller(t, args, 0, nodeEnv+"=1")
	if got := p.send(t, u6); got != "ack 6" {
		t.Fatalf("resend of update 6 after kill: %q", got)
	}
	// A forged update 7 (its signature damaged) is refused; the seller
	// wrote it while checking it, marked unchecked: killed right after,
	// the restarted seller has update 6, and takes the real update 7.
	u7, _ := buyer.Pay(ctx, c.ID, "job", 10_000)
	forged := *u7
	forged.Sig = append([]byte(nil), u7.Sig...)
	forged.Sig[len(forged.Sig)/2] ^= 1
	if got := p.send(t, &forged); !strings.HasPrefix(got, "refused") || !strings.Contains(got, "signature") {
		t.Fatalf("forged update 7: %q", got)
	}
	p.kill(t)
	p = startSeller(t, args, 0, nodeEnv+"=1")
	if got := p.send(t, u6); got != "ack 6" {
		t.Fatalf("resend of update 6 after the forged update and a kill: %q", got)
	}
	if got := p.send(t, u7); got != "ack 7" {
		t.Fatalf("update 7 after the forged one: %q", got)
	}
	p.kill(t)

	db, err := store.Open(dbPath, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seller, _ := manager(t, cfg, store.NewPaymentStore(db), 2, nil, nil)
	sc, err := seller.Channel(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Seq != 7 || sc.Paid != 70_000 || sc.Contracts["job"] != 70_000 {
		t.Fatalf("recovered seq %d paid %d contracts %v, want 7 70000", sc.Seq, sc.Paid, sc.Contracts)
	}
	rebuilt(t, db, sc.Contracts["job"])
	tx, err := seller.Close(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.Balance(payScript, tx); got != 70_000-sc.CloseFee {
		t.Fatalf("payout %d, want %d", got, 70_000-sc.CloseFee)
	}
	if sc, _ = seller.Channel(c.ID); sc.State != payment.StateClosed {
		t.Fatalf("state %s after close confirmed", sc.State)
	}
}

// TestPaymentKillAfterManyAcks: a seller process run as the node runs it
// (the real store and the channel backup) acknowledges more updates than
// its payment log holds between compactions and is killed (SIGKILL) right
// after the last acknowledgement. Reopened, the database has the newest
// update; and when the database is lost instead, a restore from the
// backup followed by the open that replays the payment log has it too.
// The history's and the contract's records of the payments, lost with the
// kill (Later commits), are rebuilt from the channel to match it.
func TestPaymentKillAfterManyAcks(t *testing.T) {
	o := openSellerChannel(t)
	ctx := context.Background()
	backup := filepath.Join(filepath.Dir(o.dbPath), "channels.backup")
	args := strings.Join([]string{o.dbPath, o.h.RPCHost, o.addr.EncodeAddress(), backup}, " ")
	p := startSeller(t, args, 0, nodeEnv+"=1")
	const n = 1000 // ~1.5 KB a record: more than the log's 1 MiB
	for i := 1; i <= n; i++ {
		u, err := o.buyer.Pay(ctx, o.c.ID, "job", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := p.send(t, u), fmt.Sprintf("ack %d", i); got != want {
			t.Fatalf("update %d: seller said %q, want %q", i, got, want)
		}
	}
	p.kill(t)
	if _, err := os.Stat(o.dbPath + store.PaylogSuffix); err != nil {
		t.Fatalf("no payment log left by the killed seller: %v", err)
	}
	check := func(what string, st payment.ChannelStore) {
		t.Helper()
		m, _ := manager(t, o.cfg, st, 2, nil, nil)
		c, err := m.Channel(o.c.ID)
		if err != nil || c.Seq != n || c.Paid != n || len(c.BuyerSig) == 0 {
			t.Fatalf("%s: channel %+v, %v; want seq and paid %d", what, c, err, n)
		}
	}

	// The database lost (moved aside) with the log beside it: restore as
	// `blackbox restore` does, from the backup, then open.
	dir := t.TempDir()
	lost := filepath.Join(dir, "blackbox.db")
	for _, suffix := range []string{store.PaylogSuffix} {
		raw, err := os.ReadFile(o.dbPath + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(lost+suffix, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := payment.ReadChannelBackup(backup)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the backup holds seq %d of %d; the rest is in the payment log", b.Channels[0].Seq, n)
	fresh, err := store.OpenFresh(lost+".restoring", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := payment.RestoreChannelBackup(b, store.NewPaymentStore(fresh)); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lost+".restoring", lost); err != nil {
		t.Fatal(err)
	}
	restored, err := store.Open(lost, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	check("restored from the backup and the log", store.NewPaymentStore(restored))

	// The database itself, reopened.
	db, err := store.Open(o.dbPath, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check("reopened", store.NewPaymentStore(db))
	// What the node records beside the channel was lost with the kill,
	// and is rebuilt from the channel.
	rebuilt(t, db, n)
}
