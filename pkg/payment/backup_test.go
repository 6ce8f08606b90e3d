package payment

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// backedPair is a memPair whose two managers keep channel backups.
func backedPair(t testing.TB) (*memPair, *BackupStore, *BackupStore) {
	t.Helper()
	dir := t.TempDir()
	bbk, err := NewBackupStore(NewMemStore(), filepath.Join(dir, "buyer.backup"))
	if err != nil {
		t.Fatal(err)
	}
	sbk, err := NewBackupStore(NewMemStore(), filepath.Join(dir, "seller.backup"))
	if err != nil {
		t.Fatal(err)
	}
	return newMemPair(t, bbk, sbk), bbk, sbk
}

// restoreFrom is a node that lost its database: a fresh store filled from
// the backup file, and a Manager on it with the same wallet seed.
func restoreFrom(t *testing.T, p *memPair, path string, sd byte, f Funder) (*Manager, *MemStore) {
	t.Helper()
	b, err := ReadChannelBackup(path)
	if err != nil {
		t.Fatal(err)
	}
	st := NewMemStore()
	if err := RestoreChannelBackup(b, st); err != nil {
		t.Fatal(err)
	}
	return newManager(t, p.seller.cfg, p.chain, st, seed(sd), f), st
}

// TestChannelBackupRestoreSellerCloses (issue 9 bug 13): the seller's
// backup holds every acknowledged update the moment it is acknowledged;
// a seller that lost its database restores from it and closes for the
// latest signed amount with a transaction the script engine accepts.
func TestChannelBackupRestoreSellerCloses(t *testing.T) {
	p, _, sbk := backedPair(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		u, err := p.buyer.Pay(ctx, p.id, "c", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			t.Fatal(err)
		}
		b, err := ReadChannelBackup(sbk.Path())
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Channels) != 1 || b.Channels[0].Paid != int64(i)*1000 || !bytes.Equal(b.Channels[0].BuyerSig, u.Sig) {
			t.Fatalf("after update %d the backup holds %+v", i, b.Channels)
		}
	}
	seller, _ := restoreFrom(t, p, sbk.Path(), 2, nil)
	c, err := seller.Channel(p.id)
	if err != nil || c.Paid != 5000 || c.State != StateOpen || c.Role != RoleSeller {
		t.Fatalf("restored channel: %+v, %v", c, err)
	}
	// The restored seller goes on taking payments, then closes.
	u, err := p.buyer.Pay(ctx, p.id, "c", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := seller.Close(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	sc, _ := seller.Channel(p.id)
	pk, _ := sc.PkScript()
	if err := verifySpend(sc, pk); err != nil {
		t.Fatalf("the restored seller's close does not verify: %v", err)
	}
	p.chain.Mine(1)
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if sc, _ := seller.Channel(p.id); sc.State != StateClosed || sc.Paid != 6000 {
		t.Fatalf("after the close: %s paid %d", sc.State, sc.Paid)
	}
}

// TestChannelBackupRestoreBuyerRefunds: a buyer that lost its database
// restores its channels and key counters from the backup: its next channel
// uses a fresh key, and after expiry it refunds the unpaid balance.
func TestChannelBackupRestoreBuyerRefunds(t *testing.T) {
	p, bbk, _ := backedPair(t)
	ctx := context.Background()
	if _, err := p.buyer.Pay(ctx, p.id, "c", 7000); err != nil {
		t.Fatal(err)
	}
	funder := p.buyer.fund
	buyer, st := restoreFrom(t, p, bbk.Path(), 1, funder)
	if next, _ := st.NextIndex("buyer_key"); next < 1 {
		t.Fatalf("restored buyer_key counter hands out %d again", next)
	}
	c, _ := buyer.Channel(p.id)
	if c.Paid != 7000 || c.Seq != 1 {
		t.Fatalf("restored buyer channel: paid %d seq %d", c.Paid, c.Seq)
	}
	p.chain.Mine(int32(c.Expiry) - 1000)
	if err := buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	bc, _ := buyer.Channel(p.id)
	if bc.State != StateClosing || len(bc.SpendTx) == 0 {
		t.Fatalf("restored buyer after expiry: %s", bc.State)
	}
	pk, _ := bc.PkScript()
	if err := verifySpend(bc, pk); err != nil {
		t.Fatalf("the restored buyer's refund does not verify: %v", err)
	}
}

// TestChannelBackupWriteFailureNotAcknowledged: when the backup cannot be
// written, the update is not acknowledged.
func TestChannelBackupWriteFailureNotAcknowledged(t *testing.T) {
	p, _, sbk := backedPair(t)
	ctx := context.Background()
	u, err := p.buyer.Pay(ctx, p.id, "c", 1000)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(sbk.Path())
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() == 0 {
		// root writes anyway: take the directory away instead.
		os.Chmod(dir, 0o700)
		if err := os.Rename(dir, dir+".gone"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(dir+".gone", dir)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err == nil {
		t.Fatal("acknowledged an update the backup could not hold")
	}
	if c, _ := p.seller.Channel(p.id); c.Paid != 0 {
		t.Fatalf("seller adopted paid %d without a backup", c.Paid)
	}
}

// TestChannelBackupDropsClosed: a closed channel leaves the backup.
func TestChannelBackupDropsClosed(t *testing.T) {
	p, _, sbk := backedPair(t)
	ctx := context.Background()
	u, _ := p.buyer.Pay(ctx, p.id, "c", 5000)
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.Close(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	b, _ := ReadChannelBackup(sbk.Path())
	if len(b.Channels) != 1 || b.Channels[0].State != StateClosing {
		t.Fatalf("while closing, the backup holds %+v", b.Channels)
	}
	p.chain.Mine(1)
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ = ReadChannelBackup(sbk.Path()); len(b.Channels) != 0 {
		t.Fatalf("closed channel still in the backup: %+v", b.Channels)
	}
}

// TestDecodeChannelBackupRefuses: damaged or forged backups are refused
// as malformed.
func TestDecodeChannelBackupRefuses(t *testing.T) {
	p, _, sbk := backedPair(t)
	good, err := os.ReadFile(sbk.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeChannelBackup(good); err != nil {
		t.Fatal(err)
	}
	c, _ := p.seller.Channel(p.id)
	mk := func(f func(c *Channel)) []byte {
		d := c.clone()
		f(d)
		raw, _ := EncodeChannelBackup(&ChannelBackup{Channels: []*Channel{d}})
		return raw
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-5] ^= 1
	for name, raw := range map[string][]byte{
		"empty":        nil,
		"no header":    []byte("{}"),
		"bit flip":     flipped,
		"truncated":    good[:len(good)-3],
		"own key":      mk(func(c *Channel) { c.BuyerKey = c.SellerKey }),
		"bad id":       mk(func(c *Channel) { c.ID = "x" }),
		"overpaid":     mk(func(c *Channel) { c.Paid = c.Capacity + 1 }),
		"unsigned pay": mk(func(c *Channel) { c.Paid = 10; c.BuyerSig = nil }),
		"bad role":     mk(func(c *Channel) { c.Role = 9 }),
		"twice":        func() []byte { r, _ := EncodeChannelBackup(&ChannelBackup{Channels: []*Channel{c, c}}); return r }(),
	} {
		if _, err := DecodeChannelBackup(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecodeChannelBackup fuzzes the backup's body under a valid header
// (a fuzzer cannot forge the checksum; the header is tested above).
func FuzzDecodeChannelBackup(f *testing.F) {
	p := newMemPair(f, NewMemStore(), NewMemStore())
	c, _ := p.seller.Channel(p.id)
	raw, _ := EncodeChannelBackup(&ChannelBackup{Channels: []*Channel{c}, Counters: map[string]uint32{"buyer_key": 3}})
	f.Add(raw[bytes.IndexByte(raw, '\n')+1:])
	f.Add([]byte(`{"channels":[null]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := sha256.Sum256(body)
		raw := append(fmt.Appendf(nil, "%s %d %x\n", backupMagic, backupVersion, sum[:]), body...)
		b, err := DecodeChannelBackup(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		// What decodes restores: every channel builds its script.
		for _, c := range b.Channels {
			if _, err := c.Script(); err != nil {
				t.Fatalf("accepted channel without a script: %v", err)
			}
		}
	})
}

// BenchmarkChannelUpdateBackedUp is BenchmarkChannelUpdate with both
// sides' backup files rewritten (and fsynced) on every update.
func BenchmarkChannelUpdateBackedUp(b *testing.B) {
	p, _, _ := backedPair(b)
	payLoop(b, p)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

// compactingMem is a MemStore that says it keeps a log (as the node's
// store does) and lets the test run its compaction.
type compactingMem struct {
	*MemStore
	compact func() error
}

func (m *compactingMem) OnCompact(fn func() error) { m.compact = fn }

// TestChannelBackupWithLoggingStore: over a store with a payment log, an
// open, a state change and a close reach the backup before they return,
// and payments reach it at the latest when the store compacts its log.
func TestChannelBackupWithLoggingStore(t *testing.T) {
	st := &compactingMem{MemStore: NewMemStore()}
	sbk, err := NewBackupStore(st, filepath.Join(t.TempDir(), "seller.backup"))
	if err != nil || st.compact == nil {
		t.Fatalf("backup over a compacting store: %v, hook set %v", err, st.compact != nil)
	}
	p := newMemPair(t, NewMemStore(), sbk)
	if b, _ := ReadChannelBackup(sbk.Path()); len(b.Channels) != 1 || b.Channels[0].State != StateOpen {
		t.Fatalf("after the open, the backup holds %+v", b.Channels)
	}
	ctx := context.Background()
	var last *Update
	for i := 0; i < 3; i++ {
		u, _ := p.buyer.Pay(ctx, p.id, "c", 1000)
		if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			t.Fatal(err)
		}
		last = u
	}
	if err := st.compact(); err != nil {
		t.Fatal(err)
	}
	if b, _ := ReadChannelBackup(sbk.Path()); b.Channels[0].Paid != 3000 || !bytes.Equal(b.Channels[0].BuyerSig, last.Sig) {
		t.Fatalf("after the log's compaction, the backup holds paid %d", b.Channels[0].Paid)
	}
	if _, err := p.seller.Close(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	if b, _ := ReadChannelBackup(sbk.Path()); b.Channels[0].State != StateClosing {
		t.Fatalf("after the close, the backup holds %s", b.Channels[0].State)
	}
}
