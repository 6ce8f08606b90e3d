package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// minEscrowDelay is the shortest escrow delay a node takes (blocks): the
// funding's confirmations, the job and its release must fit before it.
const minEscrowDelay = 6

// escrowDelaySlack allows for the blocks found between the buyer's choice
// of the delay and another party's check of it (and their tips differing).
const escrowDelaySlack = 6

// escrowNeeds is the shortest delay, in blocks, an escrow for a job of
// duration d needs: the funding's confirmations, the job at one block per
// ten minutes (rounded up), and six blocks to release it.
func escrowNeeds(d time.Duration, confirmations int32) int32 {
	return confirmations + int32((d+10*time.Minute-1)/(10*time.Minute)) + 6
}

// ArbiterConfig makes a node an escrow arbiter (arbiter.go) and sets how
// this node, as a buyer, releases escrowed jobs.
type ArbiterConfig struct {
	// Enabled answers buyers' requests for arbiter terms and decides
	// disputes of the escrows it holds a key of.
	Enabled bool `mapstructure:"enabled"`
	// FeeSat is what the arbiter charges per escrow, paid by the buyer in
	// the escrow's funding transaction to the arbiter's payout address
	// (0: free; else at least 294, and above the dust of the payout
	// address: an arbiter with a P2WSH or legacy address needs more).
	FeeSat int64 `mapstructure:"fee_sat"`
	// MaxFeeSat is the most this node, as a buyer, pays an arbiter.
	MaxFeeSat int64 `mapstructure:"max_fee_sat"`
	// Release is how this node, as a buyer, releases an escrow: auto (once
	// the receipt and the result digests check out) or manual (`blackbox
	// release JOB`; a dispute otherwise).
	Release string `mapstructure:"release"`
	// Delay is the escrow's CLTV delay in blocks: how long after the
	// funding the arbiter's key counts (an arbitrated payout waits that
	// long). As an arbiter, the delay it asks for (in its offer); as a
	// buyer, the least it funds with (longer for a job that needs it).
	Delay int32 `mapstructure:"delay"`
	// MaxDelay is the longest delay this node lets its money wait, as
	// buyer, seller (in its terms) or arbiter: a longer escrow is refused.
	MaxDelay int32 `mapstructure:"max_delay"`
}

// DefaultArbiterConfig is off, free, releases automatically, and lets an
// arbitrated payout wait a day (144 blocks), a week at most.
func DefaultArbiterConfig() ArbiterConfig {
	return ArbiterConfig{FeeSat: 0, MaxFeeSat: 10_000, Release: "auto", Delay: 144, MaxDelay: 1008}
}

// Validate names the bad key.
func (c ArbiterConfig) Validate() error {
	var errs []error
	if c.FeeSat < 0 || c.FeeSat > 0 && c.FeeSat < payment.DustP2WPKH || c.FeeSat > 100_000_000 {
		errs = append(errs, fmt.Errorf("arbiter.fee_sat: 0, or between %d and 100000000, not %d", payment.DustP2WPKH, c.FeeSat))
	}
	if c.MaxFeeSat < 0 {
		errs = append(errs, fmt.Errorf("arbiter.max_fee_sat: must not be negative, not %d", c.MaxFeeSat))
	}
	if c.Release != "auto" && c.Release != "manual" {
		errs = append(errs, fmt.Errorf("arbiter.release: auto or manual, not %q", c.Release))
	}
	if c.Delay < minEscrowDelay || c.Delay > contract.MaxEscrowDelay {
		errs = append(errs, fmt.Errorf("arbiter.delay: between %d and %d blocks, not %d", minEscrowDelay, contract.MaxEscrowDelay, c.Delay))
	}
	if c.MaxDelay < c.Delay || c.MaxDelay > contract.MaxEscrowDelay {
		errs = append(errs, fmt.Errorf("arbiter.max_delay: between arbiter.delay (%d) and %d blocks, not %d", c.Delay, contract.MaxEscrowDelay, c.MaxDelay))
	}
	return errors.Join(errs...)
}
