package api

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Earnings is the seller's history as `blackbox earnings`, `status` and the
// dashboard show it: totals over standard windows, the buckets of a chosen
// period, and why there was no work. Money is in sats (`_sat` fields), net
// means after the fees this node paid.
type Earnings struct {
	Now           time.Time `json:"now"`
	Since         time.Time `json:"since"`
	BucketSeconds int64     `json:"bucket_seconds"`
	// Today, Week and Month are the last 24 h, 7 d and 30 d.
	Today EarningsTotals `json:"today"`
	Week  EarningsTotals `json:"week"`
	Month EarningsTotals `json:"month"`
	// Period is the total over Since..Now (the buckets below).
	Period  EarningsTotals   `json:"period"`
	Buckets []EarningsBucket `json:"buckets"`
	// Now: what is in open channels and what a close of them all would
	// cost and leave, at the current fee rate.
	InChannelsSat int64 `json:"in_channels_sat"`
	CloseFeeSat   int64 `json:"close_fee_sat"`
	AfterCloseSat int64 `json:"after_close_sat"`
	// Holdings is where the money in channels is: in open ones (with the
	// three numbers above, and what no close can pay), in closes not yet
	// confirmed, settled on chain.
	Holdings payment.Holdings `json:"holdings"`
	// MarketMedianPerHour is the median hourly price the market asks for
	// this node's own offered resources (0: unknown); OwnPerHour is this
	// node's price for the same; AtMedianSat is what the sold hours of the
	// period would have earned at the median.
	MarketMedianPerHour float64 `json:"market_median_per_hour_sat"`
	OwnPerHour          float64 `json:"own_per_hour_sat"`
	AtMedianSat         int64   `json:"at_median_sat"`
	// Escrow is what escrowed jobs paid and cost over the period.
	Escrow EscrowEarnings `json:"escrow"`
	// NoWork says why there was no (or little) work, most important first.
	NoWork []NoWorkReason `json:"no_work,omitempty"`
}

// EarningsTotals sums a window.
type EarningsTotals struct {
	// EarnedSat is every payment acknowledged in the window (before
	// fees): SettledSat + ChannelSat + PendingSat.
	EarnedSat int64 `json:"earned_sat"`
	// Earned by state: settled on chain, held in open channels, pending
	// (acknowledged but in a contract that has not ended).
	SettledSat int64 `json:"settled_sat"`
	ChannelSat int64 `json:"channel_sat"`
	PendingSat int64 `json:"pending_sat"`
	FeesSat    int64 `json:"fees_sat"`
	NetSat     int64 `json:"net_sat"`
	// Busy is the share of offered CPU that was sold, 0..1, time-weighted.
	Busy      float64          `json:"busy"`
	Jobs      int64            `json:"jobs"`
	Contracts map[string]int64 `json:"contracts,omitempty"` // by outcome name
	Refusals  map[string]int64 `json:"refusals,omitempty"`  // by reason name
}

// EarningsBucket is one bucket of the history (5 minutes in the store;
// coarser when a long period is asked for).
type EarningsBucket struct {
	Start     time.Time        `json:"start"`
	EarnedSat int64            `json:"earned_sat"`
	FeesSat   int64            `json:"fees_sat"`
	Jobs      int64            `json:"jobs"`
	Contracts map[string]int64 `json:"contracts,omitempty"`
	Refusals  map[string]int64 `json:"refusals,omitempty"`
	// Capacity in millicores: spare (offered, unsold), sold (held by
	// contracts) and reserved (kept by the operator's policy), averaged
	// over the bucket; memory likewise in bytes.
	SpareMilliCPU    int64 `json:"spare_millicpu"`
	SoldMilliCPU     int64 `json:"sold_millicpu"`
	ReservedMilliCPU int64 `json:"reserved_millicpu"`
	SpareMemory      int64 `json:"spare_memory_bytes"`
	SoldMemory       int64 `json:"sold_memory_bytes"`
	ReservedMemory   int64 `json:"reserved_memory_bytes"`
}

// NoWorkReason is one cause of idleness with what to do about it.
type NoWorkReason struct {
	Code   string `json:"code"` // price, reputation, reachability, hours, payments, sandbox, capacity
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Earnings asks the daemon for its history since now-since (0: 24 h).
func (c *Client) Earnings(ctx context.Context, since time.Duration) (Earnings, error) {
	var out Earnings
	err := c.do(ctx, "GET", "/v1/earnings?since="+url.QueryEscape(since.String()), nil, &out)
	return out, err
}

// ParseSince reads a look-back period: a Go duration ("36h", "90m") or a
// number of days ("7d", "30d"); "" is 0 (the default period).
func ParseSince(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("%q is not a period: write it like 7d, 30d or 24h", s)
		}
		d = time.Duration(n * 24 * float64(time.Hour))
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a period: write it like 7d, 30d or 24h", s)
		}
	}
	return d, nil
}
