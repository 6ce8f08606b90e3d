package contract

import (
	"errors"
	"fmt"
	"time"

	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// Config is the operator-facing part of the contract engines: the
// "contract" section of the node's config file. Keys are the mapstructure
// tags. The node copies it into SellerConfig and BuyerConfig with Apply.
type Config struct {
	// FundTimeout is how long an accepted contract waits for the buyer to
	// fund it and start the job before its capacity is released.
	FundTimeout time.Duration `mapstructure:"fund_timeout"`
	// FundingWait is how long a contract whose seller will not start it
	// on an unconfirmed funding waits for the confirmations (the capacity
	// held, the buyer told) before it fails with funding_unconfirmed.
	FundingWait time.Duration `mapstructure:"funding_wait"`
	// PayGrace is how late a buyer's payment for an interval may be before
	// the seller stops the job; 0 means half the billing interval.
	PayGrace time.Duration `mapstructure:"pay_grace"`
	// RestartGrace is how long a running job waits for a daemon that
	// stopped (a crash, an upgrade) or a stream that broke: the seller's
	// job runs on and is resumed when the seller starts again within it,
	// and the buyer reconnects and pays on (job protocol 1.4.0). Longer
	// than that, the contract ends as it did before (stopped, settled for
	// what was paid). It is also what a seller risks when the buyer is
	// away: a payment falling due is waited for that long. 0 turns
	// resumption off.
	RestartGrace time.Duration `mapstructure:"restart_grace"`
	// HeartbeatGrace is how late a seller's heartbeat may be before the
	// buyer stops paying and moves on; 0 means half the billing interval.
	HeartbeatGrace time.Duration `mapstructure:"heartbeat_grace"`
	// AllowPull lets buyers name images by reference for the seller to
	// pull, rather than ship a tarball.
	AllowPull bool `mapstructure:"allow_pull"`
	// MaxImage, MaxInputs and MaxOutput cap what a buyer ships (image,
	// all inputs) and what comes back (each of stdout, stderr, out.tar).
	MaxImage  string `mapstructure:"max_image"`
	MaxInputs string `mapstructure:"max_inputs"`
	MaxOutput string `mapstructure:"max_output"`
	// MaxAttempts is how many sellers one job may go through.
	MaxAttempts int `mapstructure:"max_attempts"`
	// BusyWait is how long a buyer keeps looking, every two seconds, while
	// every matching seller is busy or none offers enough, before the job
	// fails.
	BusyWait time.Duration `mapstructure:"busy_wait"`
	// StartTimeout bounds the transfer and first payment; RunGrace is
	// added to a contract's duration; SettleTimeout bounds the delivery of
	// results and the last payment.
	StartTimeout  time.Duration `mapstructure:"start_timeout"`
	RunGrace      time.Duration `mapstructure:"run_grace"`
	SettleTimeout time.Duration `mapstructure:"settle_timeout"`
	// DirectWait is how long a buyer whose proposal a seller accepted over
	// a relayed (limited) connection waits for a direct one before it
	// gives the seller up as "unreachable", before anything is funded.
	DirectWait time.Duration `mapstructure:"direct_wait"`
	// UnreachableFor is how long a seller found unreachable is ranked
	// behind the others by this buyer (it counts nothing against its
	// reputation).
	UnreachableFor time.Duration `mapstructure:"unreachable_for"`
	// Service is how services run (serviceconfig.go).
	Service ServiceConfig `mapstructure:"service"`
	// QueueWait is how long a seller whose capacity is all held keeps a
	// proposal waiting for a running contract to end, when one is
	// expected to within it, before refusing it for capacity (queue.go);
	// 0 refuses at once.
	QueueWait time.Duration `mapstructure:"queue_wait"`
}

// DefaultConfig is what the engines run with when the file says nothing.
func DefaultConfig() Config {
	return Config{
		FundTimeout:    2 * time.Minute,
		FundingWait:    DefaultFundingWait,
		RestartGrace:   DefaultRestartGrace,
		MaxImage:       "2GiB",
		MaxInputs:      "256MiB",
		MaxOutput:      "256MiB",
		MaxAttempts:    3,
		BusyWait:       2 * time.Minute,
		StartTimeout:   5 * time.Minute,
		RunGrace:       2 * time.Minute,
		SettleTimeout:  10 * time.Minute,
		DirectWait:     DefaultDirectWait,
		UnreachableFor: DefaultUnreachableFor,
		Service:        DefaultServiceConfig(),
		QueueWait:      DefaultQueueWait,
	}
}

// Validate refuses nonsense values.
func (c Config) Validate() error {
	var errs []error
	if c.FundingWait < 0 || c.FundingWait > 24*time.Hour {
		errs = append(errs, fmt.Errorf("contract.funding_wait: between 0 (the default, %s) and 24h, got %s", DefaultFundingWait, c.FundingWait))
	}
	if c.FundTimeout < 0 || c.PayGrace < 0 || c.HeartbeatGrace < 0 || c.StartTimeout < 0 || c.RunGrace < 0 || c.SettleTimeout < 0 || c.BusyWait < 0 {
		errs = append(errs, errors.New("contract: timeouts and graces must not be negative"))
	}
	if c.FundTimeout > MaxRecordTTL-time.Minute {
		errs = append(errs, fmt.Errorf("contract.fund_timeout: at most %s", MaxRecordTTL-time.Minute))
	}
	if c.RestartGrace < 0 || c.RestartGrace > time.Hour {
		errs = append(errs, fmt.Errorf("contract.restart_grace: must be in 0..1h (0: no resumption), got %s", c.RestartGrace))
	}
	if c.DirectWait < 0 || c.UnreachableFor < 0 {
		errs = append(errs, errors.New("contract.direct_wait and contract.unreachable_for: must not be negative"))
	}
	if c.DirectWait > 10*time.Minute {
		errs = append(errs, fmt.Errorf("contract.direct_wait: at most 10m (the seller releases an unfunded contract after fund_timeout), got %s", c.DirectWait))
	}
	if c.QueueWait < 0 || c.QueueWait > maxQueueWait {
		errs = append(errs, fmt.Errorf("contract.queue_wait: must be in 0..%s (a buyer waits %s for an answer; 0: refuse at once), got %s", maxQueueWait, negotiateTimeout, c.QueueWait))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, errors.New("contract.max_attempts: must not be negative"))
	}
	if err := c.Service.Validate(); err != nil {
		errs = append(errs, err)
	}
	for key, v := range map[string]string{"max_image": c.MaxImage, "max_inputs": c.MaxInputs, "max_output": c.MaxOutput} {
		if v == "" {
			continue
		}
		if _, err := quantity.ParseSize(v); err != nil {
			errs = append(errs, fmt.Errorf("contract.%s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

func size(s string) int64 {
	n, _ := quantity.ParseSize(s)
	return n
}

func (c Config) timeouts() Timeouts {
	return Timeouts{Start: c.StartTimeout, RunGrace: c.RunGrace, Settle: c.SettleTimeout}
}

// ApplySeller copies the seller's settings into sc.
func (c Config) ApplySeller(sc *SellerConfig) {
	sc.FundTimeout, sc.PayGrace, sc.AllowPull, sc.RestartGrace = c.FundTimeout, c.PayGrace, c.AllowPull, c.RestartGrace
	sc.FundingWait, sc.QueueWait = c.FundingWait, c.QueueWait
	sc.MaxImageBytes, sc.MaxInputBytes, sc.MaxOutputBytes = size(c.MaxImage), size(c.MaxInputs), size(c.MaxOutput)
	sc.Timeouts = c.timeouts()
	sc.Service = c.Service
}

// ApplyBuyer copies the buyer's settings into bc.
func (c Config) ApplyBuyer(bc *BuyerConfig) {
	bc.HeartbeatGrace, bc.MaxAttempts, bc.MaxOutputBytes = c.HeartbeatGrace, c.MaxAttempts, size(c.MaxOutput)
	bc.RestartGrace = c.RestartGrace
	bc.Timeouts = c.timeouts()
	bc.DirectWait, bc.UnreachableFor = c.DirectWait, c.UnreachableFor
	bc.FundingWait = c.FundingWait
	bc.Service = c.Service
	if bc.RetryBackoff <= 0 {
		bc.RetryBackoff = busyRetry
	}
	bc.Rounds = max(1, int(c.BusyWait/bc.RetryBackoff)+1)
}

// busyRetry is the wait between two searches of a busy market.
const busyRetry = 2 * time.Second
