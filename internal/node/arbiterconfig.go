package node

import (
	"errors"
	"fmt"
)

// ArbiterConfig makes a node an escrow arbiter (arbiter.go) and sets how
// this node, as a buyer, releases escrowed jobs.
type ArbiterConfig struct {
	// Enabled answers buyers' requests for arbiter terms and decides
	// disputes of the escrows it holds a key of.
	Enabled bool `mapstructure:"enabled"`
	// FeeSat is what the arbiter charges per escrow, paid by the buyer in
	// the escrow's funding transaction to the arbiter's payout address
	// (0: free; else at least 546, above dust).
	FeeSat int64 `mapstructure:"fee_sat"`
	// MaxFeeSat is the most this node, as a buyer, pays an arbiter.
	MaxFeeSat int64 `mapstructure:"max_fee_sat"`
	// Release is how this node, as a buyer, releases an escrow: auto (once
	// the receipt and the result digests check out) or manual (`blackbox
	// release JOB`; a dispute otherwise).
	Release string `mapstructure:"release"`
}

// DefaultArbiterConfig is off, free, and releases automatically.
func DefaultArbiterConfig() ArbiterConfig {
	return ArbiterConfig{FeeSat: 0, MaxFeeSat: 10_000, Release: "auto"}
}

// Validate names the bad key.
func (c ArbiterConfig) Validate() error {
	var errs []error
	if c.FeeSat < 0 || c.FeeSat > 0 && c.FeeSat < 546 || c.FeeSat > 100_000_000 {
		errs = append(errs, fmt.Errorf("arbiter.fee_sat: 0, or between 546 and 100000000, not %d", c.FeeSat))
	}
	if c.MaxFeeSat < 0 {
		errs = append(errs, fmt.Errorf("arbiter.max_fee_sat: must not be negative, not %d", c.MaxFeeSat))
	}
	if c.Release != "auto" && c.Release != "manual" {
		errs = append(errs, fmt.Errorf("arbiter.release: auto or manual, not %q", c.Release))
	}
	return errors.Join(errs...)
}
