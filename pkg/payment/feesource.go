package payment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/wire"
)

// Where a fee rate came from (status's fee_source).
const (
	// FeeFromEstimate is btcd's estimatefee (its mempool and blocks).
	FeeFromEstimate = "estimate"
	// FeeFromBlocks is the light client's: the median of the average fee
	// rates of the last feeBlocks blocks.
	FeeFromBlocks = "blocks"
	// FeeFromURL is payment.fee_url's answer.
	FeeFromURL = "url"
	// FeeFromFallback is payment.fallback_fee_rate: no source had a rate.
	FeeFromFallback = "fallback"
)

// FeeReporter is a Chain that says where its fee rate came from.
type FeeReporter interface {
	FeeRateFrom(ctx context.Context, target int) (rate int64, source string, ok bool)
}

// FeeRateSource is Config.FeeRate with where the rate came from: the
// chain's rate clamped into [min_fee_rate, max_fee_rate], else the
// fallback.
func (c *Config) FeeRateSource(ctx context.Context, chain Chain, target int) (int64, string) {
	if fr, ok := chain.(FeeReporter); ok {
		r, src, ok := fr.FeeRateFrom(ctx, target)
		if !ok {
			return c.FallbackFeeRate, FeeFromFallback
		}
		return c.clampFeeRate(r), src
	}
	r, ok, err := chain.FeeRate(ctx, target)
	if err != nil || !ok {
		return c.FallbackFeeRate, FeeFromFallback
	}
	return c.clampFeeRate(r), FeeFromEstimate
}

const (
	// feeBlocks is how many recent blocks the light client's rate looks at.
	feeBlocks = 6
	// feeURLTTL is how long a fee_url answer is used.
	feeURLTTL = 5 * time.Minute
)

// feeSource is the light client's fee rate: payment.fee_url when set and
// answering, else the recent blocks.
type feeSource struct {
	url    string
	client *http.Client
	blocks func(ctx context.Context) (int64, bool, error)

	mu      sync.Mutex
	urlAt   time.Time
	urlBody []byte
}

func newFeeSource(cfg Config, blocks func(ctx context.Context) (int64, bool, error)) *feeSource {
	return &feeSource{url: cfg.FeeURL, client: &http.Client{Timeout: 10 * time.Second}, blocks: blocks}
}

func (f *feeSource) rate(ctx context.Context, target int) (int64, string, bool) {
	if f.url != "" {
		if r, err := f.fromURL(ctx, target); err == nil {
			return r, FeeFromURL, true
		}
	}
	if f.blocks != nil {
		if r, ok, err := f.blocks(ctx); err == nil && ok {
			return r, FeeFromBlocks, true
		}
	}
	return 0, FeeFromFallback, false
}

func (f *feeSource) fromURL(ctx context.Context, target int) (int64, error) {
	f.mu.Lock()
	body, at := f.urlBody, f.urlAt
	f.mu.Unlock()
	if body == nil || time.Since(at) > feeURLTTL {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := f.client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("fee_url: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("fee_url: %s", resp.Status)
		}
		if body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err != nil {
			return 0, fmt.Errorf("fee_url: %w", err)
		}
		if _, err := ParseFeeRate(body, target); err != nil {
			return 0, err
		}
		f.mu.Lock()
		f.urlBody, f.urlAt = body, time.Now()
		f.mu.Unlock()
	}
	return ParseFeeRate(body, target)
}

// ParseFeeRate reads a fee service's answer, in sat/vB for confirmation
// within target blocks. It takes lnd's feeurl format
// ({"fee_by_block_target": {"2": 20000, ...}}, sat/kvB: the rate of the
// largest target not above target, else the smallest), mempool.space's
// /api/v1/fees/recommended ({"fastestFee": 12, "halfHourFee": ..., "hourFee":
// ..., "economyFee": ...}, sat/vB), or a bare number of sat/vB.
func ParseFeeRate(body []byte, target int) (int64, error) {
	var lnd struct {
		ByTarget map[string]float64 `json:"fee_by_block_target"`
	}
	var space struct {
		Fastest  *float64 `json:"fastestFee"`
		HalfHour *float64 `json:"halfHourFee"`
		Hour     *float64 `json:"hourFee"`
		Economy  *float64 `json:"economyFee"`
	}
	var bare float64
	var satPerVB float64
	switch {
	case json.Unmarshal(body, &bare) == nil:
		satPerVB = bare
	case json.Unmarshal(body, &lnd) == nil && len(lnd.ByTarget) > 0:
		type kv struct {
			t    int
			rate float64
		}
		var all []kv
		for k, v := range lnd.ByTarget {
			t, err := strconv.Atoi(k)
			if err != nil || t < 1 {
				return 0, fmt.Errorf("fee_url: block target %q is not a positive number", k)
			}
			all = append(all, kv{t, v})
		}
		slices.SortFunc(all, func(a, b kv) int { return a.t - b.t })
		pick := all[0]
		for _, e := range all {
			if e.t <= target {
				pick = e
			}
		}
		satPerVB = pick.rate / 1000
	case json.Unmarshal(body, &space) == nil && space.Fastest != nil:
		pick := space.Fastest
		switch {
		case target > 6 && space.Economy != nil:
			pick = space.Economy
		case target > 3 && space.Hour != nil:
			pick = space.Hour
		case target > 1 && space.HalfHour != nil:
			pick = space.HalfHour
		}
		satPerVB = *pick
	default:
		return 0, errors.New("fee_url: answer is neither lnd's fee_by_block_target, mempool.space's fees nor a number")
	}
	if math.IsNaN(satPerVB) || satPerVB <= 0 || satPerVB > 1e6 {
		return 0, fmt.Errorf("fee_url: rate %v sat/vB is out of range", satPerVB)
	}
	return int64(math.Ceil(satPerVB)), nil
}

// blockFeeRate is the light client's own rate: for each of the last
// feeBlocks blocks with transactions, the fees (the coinbase's outputs less
// the subsidy: no previous outputs needed) over the non-coinbase virtual
// size; the median of those. One fetch per new tip; ok is false on a chain
// with empty blocks (regtest before any payment).
func (n *NeutrinoChain) blockFeeRate(ctx context.Context) (int64, bool, error) {
	bb, err := n.cs.BestBlock()
	if err != nil {
		return 0, false, err
	}
	n.mu.Lock()
	if n.feeTip == bb.Hash {
		r, ok := n.feeRate, n.feeOK
		n.mu.Unlock()
		return r, ok, nil
	}
	n.mu.Unlock()
	var rates []float64
	for h := bb.Height; h > 0 && h > bb.Height-2*feeBlocks && len(rates) < feeBlocks; h-- {
		hash, err := n.cs.GetBlockHash(int64(h))
		if err != nil {
			return 0, false, err
		}
		blk, err := n.block(ctx, *hash)
		if err != nil {
			return 0, false, err
		}
		if r, ok := blockAverageFeeRate(blk, h, n.params); ok {
			rates = append(rates, r)
		}
	}
	var rate int64
	ok := len(rates) > 0
	if ok {
		slices.Sort(rates)
		rate = int64(math.Ceil(rates[len(rates)/2]))
	}
	n.mu.Lock()
	n.feeTip, n.feeRate, n.feeOK = bb.Hash, rate, ok
	n.mu.Unlock()
	return rate, ok, nil
}

// blockAverageFeeRate is a block's fees over its transactions' virtual
// size (coinbase excluded), in sat/vB; ok is false for a block with only a
// coinbase.
func blockAverageFeeRate(blk *wire.MsgBlock, height int32, params *chaincfg.Params) (float64, bool) {
	if len(blk.Transactions) < 2 {
		return 0, false
	}
	var out int64
	for _, o := range blk.Transactions[0].TxOut {
		out += o.Value
	}
	subsidy := blockchain.CalcBlockSubsidy(height, params)
	fees := out - subsidy
	var vsize int64
	for _, tx := range blk.Transactions[1:] {
		vsize += VSize(tx)
	}
	if fees <= 0 || vsize <= 0 {
		// A miner may claim less than it could: no signal.
		return 0, fees == 0 && vsize > 0
	}
	return float64(fees) / float64(vsize), true
}
