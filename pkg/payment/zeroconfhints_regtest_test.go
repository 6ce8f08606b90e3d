//go:build integration

package payment

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
)

// newTaprootFunder is a keyFunder whose coins are P2TR key-path outputs
// (BIP 86) of its key.
func newTaprootFunder(t *testing.T, f *keyFunder) *keyFunder {
	t.Helper()
	pk, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(f.key.PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	f.script, f.taproot = pk, true
	return f
}

// TxHeight implements TxHeighter as a wallet does: the height of the block
// holding one of its transactions (btcd's txindex here).
func (f *keyFunder) TxHeight(txid chainhash.Hash) int32 {
	res, err := f.h.Client().GetRawTransactionVerbose(&txid)
	if err != nil || res.BlockHash == "" {
		return 0
	}
	bh, err := chainhash.NewHashFromStr(res.BlockHash)
	if err != nil {
		return 0
	}
	hdr, err := f.h.Client().GetBlockHeaderVerbose(bh)
	if err != nil {
		return 0
	}
	return hdr.Height
}

// TestZeroConfLightHints: a light seller (neutrino against a real btcd over
// P2P) accepts unconfirmed a funding spending a coin older than its
// 1,008-block filter scan, found through the buyer's height hint (the open
// extension), and one spending a taproot key-path coin, which reveals no
// script and is found only through its hint; without the hint the old coin
// is not found, and the funding waits for its confirmations, as it does
// for a hinted coin a block has spent since.
func TestZeroConfLightHints(t *testing.T) {
	t.Parallel()
	p := newPair(t, BackendNeutrino)
	ctx := context.Background()
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	old := newKeyFunder(t, p.h)
	tr := newTaprootFunder(t, newKeyFunder(t, p.h))
	oldBuyer := newManager(t, p.cfg, p.chain, NewMemStore(), seed(3), old)
	trBuyer := newManager(t, p.cfg, p.chain, NewMemStore(), seed(4), tr)
	open := func(buyer *Manager, peer string, hints bool) (*Channel, *Channel) {
		t.Helper()
		return p.openZeroConf(t, buyer, terms, peer, hints)
	}

	old.coin(t, 1_000_000)
	p.gen(t, 1)
	coinHeight := p.h.Tip(t)
	p.gen(t, zeroConfLookback+2)
	t.Logf("old coin in block %d, tip %d", coinHeight, p.h.Tip(t))

	// With the hint: found in its block, unspent since (the filters of
	// the 1,011 blocks since are fetched: the light client has none
	// cached yet).
	start := time.Now()
	c, sc := open(oldBuyer, "b1", true)
	first := c.FundingTxid()
	if !sc.ZeroConf || sc.State != StatePending {
		t.Fatalf("old coin with its hint: zero_conf %v (%s), state %s", sc.ZeroConf, sc.ZeroConfWhy, sc.State)
	}
	t.Logf("old coin with its hint: accepted unconfirmed in %s (open and accept, with the %s broadcast wait)", time.Since(start).Round(time.Millisecond), zeroConfBroadcastWait)
	// Without it: older than the scan, not found (a funding of its own
	// the seller never broadcasts: its checks fail first).
	old.publish = false
	start = time.Now()
	if _, sc := open(oldBuyer, "b0", false); sc.ZeroConf || !strings.Contains(sc.ZeroConfWhy, "no block of the last 1008") {
		t.Fatalf("old coin without a hint: zero_conf %v, why %q", sc.ZeroConf, sc.ZeroConfWhy)
	}
	t.Logf("old coin without a hint: refused in %s", time.Since(start).Round(time.Millisecond))
	if st, err := p.seller.Admit(ctx, c.ID, "c1", 4_000); err != nil || !st.Ready || !st.ZeroConf {
		t.Fatalf("admit on the old coin's funding: %+v %v", st, err)
	}

	// A taproot coin, confirmed once: its key-path spend shows only a
	// signature.
	tr.coin(t, 1_000_000)
	p.gen(t, 1)
	c, sc = open(trBuyer, "b2", true)
	if !sc.ZeroConf || sc.State != StatePending {
		t.Fatalf("taproot coin with its hint: zero_conf %v (%s), state %s", sc.ZeroConf, sc.ZeroConfWhy, sc.State)
	}
	if st, err := p.seller.Admit(ctx, c.ID, "c2", 4_000); err != nil || !st.Ready || !st.ZeroConf || st.Exposure != 8_000 {
		t.Fatalf("admit on the taproot funding: %+v %v", st, err)
	}

	// Once a block holds the old coin's funding, another funding of that
	// coin, hinted right, is refused: the filters since show the spend.
	p.gen(t, 1)
	old.publish = false
	if _, sc := open(oldBuyer, "b3", true); sc.ZeroConf || !strings.Contains(sc.ZeroConfWhy, "spent by "+first.String()) {
		t.Fatalf("a spent old coin with its hint: zero_conf %v, why %q", sc.ZeroConf, sc.ZeroConfWhy)
	}
}
