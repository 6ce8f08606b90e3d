//go:build integration

package payment

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// keyFunder is a buyer's wallet holding one P2WPKH coin of its own key
// (the harness's coins all pay one reused script): FundTx spends exactly
// that coin, whatever it is (confirmed, unconfirmed, unknown, spent).
type keyFunder struct {
	h       *btcdtest.Harness
	key     *btcec.PrivateKey
	script  []byte
	op      wire.OutPoint
	value   int64
	publish bool // PublishTx sends it to btcd (else it is only handed over)
	taproot bool // the coin is a P2TR key-path output of key (newTaprootFunder)
}

func newKeyFunder(t *testing.T, h *btcdtest.Harness) *keyFunder {
	t.Helper()
	k := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), btcdtest.Params)
	s, _ := txscript.PayToAddrScript(a)
	return &keyFunder{h: h, key: k, script: s, publish: true}
}

// coin makes the funder's coin a fresh output of value from the harness
// (unconfirmed until mined).
func (f *keyFunder) coin(t *testing.T, value int64) *wire.MsgTx {
	t.Helper()
	tx, vout, err := f.h.Send(f.script, value)
	if err != nil {
		t.Fatal(err)
	}
	f.op, f.value = wire.OutPoint{Hash: tx.TxHash(), Index: vout}, value
	return tx
}

func (f *keyFunder) NewScript(ctx context.Context) ([]byte, error) { return f.h.NewScript(ctx) }

func (f *keyFunder) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	if !f.publish {
		return nil
	}
	return f.h.PublishTx(ctx, tx)
}

func (f *keyFunder) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&f.op, nil, wire.TxWitness{make([]byte, 73), make([]byte, 33)}))
	if f.taproot {
		tx.TxIn[0].Witness = wire.TxWitness{make([]byte, 64)}
	}
	var need int64
	for _, o := range outs {
		tx.AddTxOut(o)
		need += o.Value
	}
	tx.AddTxOut(wire.NewTxOut(0, f.script))
	tx.TxOut[len(tx.TxOut)-1].Value = f.value - need - feeRate*VSize(tx)
	hashes := txscript.NewTxSigHashes(tx, txscript.NewCannedPrevOutputFetcher(f.script, f.value))
	if f.taproot {
		wit, err := txscript.TaprootWitnessSignature(tx, hashes, 0, f.value, f.script, txscript.SigHashDefault, f.key)
		if err != nil {
			return nil, err
		}
		tx.TxIn[0].Witness = wit
		return tx, nil
	}
	wit, err := txscript.WitnessSignature(tx, hashes,
		0, f.value, f.script, txscript.SigHashAll, f.key, true)
	if err != nil {
		return nil, err
	}
	tx.TxIn[0].Witness = wit
	return tx, nil
}

// spend spends the funder's coin back to its key (a transaction of its
// own, not a funding), sent to btcd when publish.
func (f *keyFunder) spend(t *testing.T, publish bool) *wire.MsgTx {
	t.Helper()
	tx, err := f.FundTx(context.Background(), nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	if publish {
		if err := f.h.PublishTx(context.Background(), tx); err != nil {
			t.Fatal(err)
		}
	}
	return tx
}

// openZeroConf opens a 300,000 sat channel at 5 sat/vB from buyer to p's
// seller (on terms), the open carrying the buyer's input heights when
// hints, and has the seller accept it as peer's. It returns the buyer's
// channel and the seller's.
func (p *pair) openZeroConf(t *testing.T, buyer *Manager, terms SellerTerms, peer string, hints bool) (*Channel, *Channel) {
	t.Helper()
	ctx := context.Background()
	c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "seller", Seller: terms, Capacity: 300_000, FeeRate: 5})
	if err != nil {
		t.Fatal(err)
	}
	msg := req.Encode()
	if hints {
		if msg = buyer.WithInputHeights(msg); len(msg) == len(req.Encode()) {
			t.Fatal("the buyer's wallet gave no input heights")
		}
	}
	sc, err := p.seller.AcceptOpen(ctx, peer, msg)
	if err != nil {
		t.Fatal(err)
	}
	return c, sc
}

// TestZeroConfLight: a seller on the light client (neutrino against a
// real btcd over P2P, no RPC) checks an unconfirmed funding's inputs
// through the compact filters: a funding spending a confirmed, unspent
// P2WPKH coin is worked on unconfirmed (a contract admitted and paid with
// no block mined), and its double-spend, once mined, fails the channel;
// a funding spending an unconfirmed coin, an unknown one, or a coin a
// block already spent is not worked on unconfirmed, and says why.
func TestZeroConfLight(t *testing.T) {
	t.Parallel()
	p := newPair(t, BackendNeutrino)
	ctx := context.Background()
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	f := newKeyFunder(t, p.h)
	buyer := newManager(t, p.cfg, p.chain, NewMemStore(), seed(3), f)
	// open funds a channel from f's coin and hands it to the seller as
	// peer's.
	open := func(peer string) (*Channel, *Channel) {
		t.Helper()
		return p.openZeroConf(t, buyer, terms, peer, false)
	}

	// A confirmed coin, paid to a fresh key.
	f.coin(t, 1_000_000)
	p.gen(t, 1)
	tip := p.h.Tip(t)
	c, sc := open("buyer")
	if !sc.ZeroConf || sc.State != StatePending {
		t.Fatalf("funding of a confirmed unspent coin: zero_conf %v (%s), state %s", sc.ZeroConf, sc.ZeroConfWhy, sc.State)
	}
	st, err := p.seller.Admit(ctx, c.ID, "c1", 4_000)
	if err != nil || !st.Ready || !st.ZeroConf || st.Exposure != 4_000 {
		t.Fatalf("admit: %+v %v", st, err)
	}
	u, err := buyer.Pay(ctx, c.ID, "c1", 4_000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "buyer", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if got := p.h.Tip(t); got != tip {
		t.Fatalf("a block was mined (%d → %d)", tip, got)
	}
	// The buyer double-spends the coin in a block (a miner it paid
	// directly): the light seller finds the spend through the filters
	// and fails the channel.
	conflict := f.spend(t, false)
	if _, err := p.h.MineTxs(conflict); err != nil {
		t.Fatal(err)
	}
	if p.cfg.Confirmations > 1 {
		p.gen(t, uint32(p.cfg.Confirmations-1))
	} else {
		waitLight(t, p.light, p.h)
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := p.seller.Channel(c.ID); err != nil || got.State != StateFailed || !strings.Contains(got.FailReason, "double-spent") {
		t.Fatalf("after the double-spend: %+v %v", got, err)
	}
	if v := p.seller.ZeroConf(); v.ExposureSat != 0 {
		t.Fatalf("exposure after the double-spend %+v", v)
	}

	refused := func(what, why string) {
		t.Helper()
		_, sc := open("buyer2") // "buyer" had a channel fail
		if sc.ZeroConf || !strings.Contains(sc.ZeroConfWhy, why) {
			t.Fatalf("funding spending %s: zero_conf %v, why %q, want %q", what, sc.ZeroConf, sc.ZeroConfWhy, why)
		}
		t.Logf("%s: %s", what, sc.ZeroConfWhy)
	}
	// An unconfirmed coin (the miner stopped).
	f.coin(t, 1_000_000)
	refused("an unconfirmed coin", "no block of the last")
	// A coin nobody ever made.
	var h chainhash.Hash
	_, _ = rand.Read(h[:])
	f.op, f.publish = wire.OutPoint{Hash: h, Index: 0}, false
	refused("an unknown coin", "no block of the last")
	// A confirmed coin a block has spent since.
	f.publish = true
	f.coin(t, 1_000_000)
	p.gen(t, 1)
	spent := f.spend(t, true)
	p.gen(t, 1)
	f.publish = false
	refused("a spent coin", "spent by "+spent.TxHash().String())
}
