package payment

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/wire"
)

func TestParseFeeRate(t *testing.T) {
	cases := []struct {
		body   string
		target int
		want   int64
		bad    bool
	}{
		{`12.2`, 6, 13, false},
		{`{"fee_by_block_target": {"1": 30000, "3": 20000, "6": 10000}}`, 6, 10, false},
		{`{"fee_by_block_target": {"1": 30000, "3": 20000, "6": 10000}}`, 4, 20, false},
		{`{"fee_by_block_target": {"2": 30000}}`, 1, 30, false},
		{`{"fastestFee": 40, "halfHourFee": 30, "hourFee": 20, "economyFee": 5, "minimumFee": 1}`, 1, 40, false},
		{`{"fastestFee": 40, "halfHourFee": 30, "hourFee": 20, "economyFee": 5, "minimumFee": 1}`, 6, 20, false},
		{`{"fastestFee": 40, "halfHourFee": 30, "hourFee": 20, "economyFee": 5, "minimumFee": 1}`, 144, 5, false},
		{`0`, 6, 0, true},
		{`-3`, 6, 0, true},
		{`{"fee_by_block_target": {"x": 1000}}`, 6, 0, true},
		{`{}`, 6, 0, true},
		{`<html>`, 6, 0, true},
	}
	for _, c := range cases {
		got, err := ParseFeeRate([]byte(c.body), c.target)
		if c.bad != (err != nil) || got != c.want {
			t.Errorf("ParseFeeRate(%s, %d) = %d, %v; want %d (error %v)", c.body, c.target, got, err, c.want, c.bad)
		}
	}
}

// A fee_url answer is used, clamped, and said; a dead URL falls back.
func TestFeeSourceURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"fee_by_block_target": {"2": 250000, "6": 50000}}`))
	}))
	defer srv.Close()
	cfg := RegtestConfig()
	cfg.FeeURL = srv.URL
	f := newFeeSource(cfg, nil)
	if r, src, ok := f.rate(context.Background(), 6); !ok || src != FeeFromURL || r != 50 {
		t.Fatalf("rate %d from %s (%v), want 50 from url", r, src, ok)
	}
	cfg.FeeURL = "http://127.0.0.1:1/none"
	f = newFeeSource(cfg, func(context.Context) (int64, bool, error) { return 7, true, nil })
	if r, src, ok := f.rate(context.Background(), 6); !ok || src != FeeFromBlocks || r != 7 {
		t.Fatalf("rate %d from %s (%v), want 7 from blocks after the URL failed", r, src, ok)
	}
}

func TestBlockAverageFeeRate(t *testing.T) {
	params := &chaincfg.RegressionNetParams
	sub := blockchain.CalcBlockSubsidy(200, params)
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(1000, make([]byte, 22)))
	vs := VSize(tx)
	cb := wire.NewMsgTx(2)
	cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: ^uint32(0)}, nil, nil))
	cb.AddTxOut(wire.NewTxOut(sub+5*vs, nil))
	blk := &wire.MsgBlock{Transactions: []*wire.MsgTx{cb, tx}}
	if r, ok := blockAverageFeeRate(blk, 200, params); !ok || r != 5 {
		t.Fatalf("rate %v %v, want 5", r, ok)
	}
	if _, ok := blockAverageFeeRate(&wire.MsgBlock{Transactions: []*wire.MsgTx{cb}}, 200, params); ok {
		t.Fatal("a block with only a coinbase gave a rate")
	}
}

func FuzzParseFeeRate(f *testing.F) {
	f.Add([]byte(`{"fee_by_block_target": {"2": 30000}}`), 6)
	f.Add([]byte(`{"fastestFee": 40, "hourFee": 20}`), 3)
	f.Add([]byte(`12`), 1)
	f.Fuzz(func(t *testing.T, body []byte, target int) {
		r, err := ParseFeeRate(body, target)
		if err == nil && (r < 1 || r > 1e6) {
			t.Fatalf("rate %d accepted from %q", r, body)
		}
	})
}
