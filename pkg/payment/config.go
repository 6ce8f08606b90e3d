package payment

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
)

// Config is the payment subsystem's configuration (config section
// "payment"). Start from DefaultConfig.
type Config struct {
	// Network is mainnet, testnet (testnet3), testnet4, signet or regtest.
	Network string `mapstructure:"network"`
	// Backend is the chain source: neutrino (an embedded light client,
	// no full node needed) or btcd (its RPC: rpc_host, rpc_user, ...).
	Backend string `mapstructure:"backend"`
	// Peers are the light client's Bitcoin peers (host:port); empty means
	// the network's DNS seeds. When set, only these are used.
	Peers []string `mapstructure:"peers"`
	// FeeURL, if set, is asked for fee rates by the light client (lnd's
	// feeurl format, mempool.space's /api/v1/fees/recommended, or a bare
	// sat/vB number); without it the rate comes from recent blocks.
	FeeURL string `mapstructure:"fee_url"`
	// RPCHost is btcd's RPC endpoint, host:port.
	RPCHost string `mapstructure:"rpc_host"`
	// RPCUser and RPCPass authenticate to btcd.
	RPCUser string `mapstructure:"rpc_user"`
	RPCPass string `mapstructure:"rpc_pass"`
	// RPCCert is the path of btcd's TLS certificate (rpc.cert); empty with
	// RPCNoTLS on loopback.
	RPCCert string `mapstructure:"rpc_cert"`
	// RPCNoTLS talks plain HTTP to btcd; btcd only allows this on loopback.
	RPCNoTLS bool `mapstructure:"rpc_notls"`
	// PayoutAddress is where the seller's closes pay (an address of Network).
	PayoutAddress string `mapstructure:"payout_address"`
	// PayoutXpub, if set instead, gives a fresh P2WPKH address per channel:
	// its external chain's children in order (m/0/0, m/0/1, …), the one
	// after the last a channel pays, so a wallet holding the xpub finds them
	// all (see payoutIndex).
	PayoutXpub string `mapstructure:"payout_xpub"`
	// PayoutSweep (with PayoutAddress or PayoutXpub set) has closes pay a
	// per-channel key of the node, and batched sweeps forward the
	// confirmed outputs to the payout address: both can then be fee-bumped
	// by the node (sweep.go). false: closes pay the payout address
	// directly, one transaction fewer, but a stuck close cannot be bumped.
	PayoutSweep bool `mapstructure:"payout_sweep"`
	// SweepAt and SweepAfter say when a sweep runs: once the confirmed
	// close outputs waiting hold SweepAt sats, or once the oldest has
	// waited SweepAfter (0 turns either off; both 0: at once), and only
	// when the sweep pays at least its own fee.
	SweepAt    int64         `mapstructure:"sweep_at"`
	SweepAfter time.Duration `mapstructure:"sweep_after"`
	// MinFeeRate and MaxFeeRate bound every fee rate we pay, in sat/vB; the
	// fee estimate is clamped into this range. A transaction above
	// MaxFeeRate, or above MaxFee in total, is refused.
	MinFeeRate int64 `mapstructure:"min_fee_rate"`
	MaxFeeRate int64 `mapstructure:"max_fee_rate"`
	// MaxFee caps the absolute fee of one transaction, in satoshis.
	MaxFee int64 `mapstructure:"max_fee"`
	// FallbackFeeRate is used when the backend has no estimate (sat/vB).
	FallbackFeeRate int64 `mapstructure:"fallback_fee_rate"`
	// Confirmations a funding transaction needs before the channel opens.
	Confirmations int32 `mapstructure:"confirmations"`
	// ZeroConfMax bounds, in satoshis, what a seller works for on channels
	// whose funding is not confirmed yet: its exposure to a double-spend
	// of those fundings (zeroconf.go). A contract that would take it
	// higher waits for the confirmations before it starts; 0 waits always.
	ZeroConfMax int64 `mapstructure:"zero_conf_max"`
	// SafetyMargin is how many blocks before expiry the seller closes.
	SafetyMargin int32 `mapstructure:"safety_margin"`
	// ChannelLifetime is a new channel's expiry, in blocks from the tip.
	ChannelLifetime int32 `mapstructure:"channel_lifetime"`
	// BumpAfter is how many blocks our close or refund may stay
	// unconfirmed before its fee is bumped (and again after each bump):
	// RBF for a refund, CPFP for a close (bump.go).
	BumpAfter int32 `mapstructure:"bump_after"`
	// FundingTimeout is how many blocks a channel's funding may stay out
	// of the chain (never mined, evicted, or reorged out) before the
	// channel fails (fundwatch.go).
	FundingTimeout int32 `mapstructure:"funding_timeout"`
	// PassphraseFile holds the wallet passphrase; empty means the
	// environment variable BLACKBOX_WALLET_PASSPHRASE.
	PassphraseFile string `mapstructure:"passphrase_file"`
	// BackupFile is the static channel backup (see BackupStore), rewritten
	// on every channel open, state change and close, and within BackupDelay
	// of a payment; empty means channels.backup in the data
	// dir. Another disk keeps it through the loss of the data dir's.
	BackupFile string `mapstructure:"backup_file"`
	// Required makes `blackbox serve` exit with the reason when payments
	// cannot start (a node without them earns nothing): "auto" (required
	// when running as a systemd service), "true" or "false".
	Required string `mapstructure:"required"`
	// CloseIdle closes a seller's channel no payment has moved for this
	// long, when the close pays the seller at least its fee (see
	// ClosePolicy); 0: never for idleness.
	CloseIdle time.Duration `mapstructure:"close_idle"`
	// CloseAt closes a seller's channel once the payments it holds reach
	// this many sats (and no contract of its buyer is running); 0: never
	// for its balance. Closes before expiry happen whatever these say.
	CloseAt int64 `mapstructure:"close_at"`
	// ChannelMinCapacity, ChannelMaxCapacity, ChannelVolumeHours and
	// ChannelRefillAt size the buyer's channels (PayerConfig, payerbook.go).
	ChannelMinCapacity int64   `mapstructure:"channel_min_capacity"`
	ChannelMaxCapacity int64   `mapstructure:"channel_max_capacity"`
	ChannelVolumeHours int64   `mapstructure:"channel_volume_hours"`
	ChannelRefillAt    float64 `mapstructure:"channel_refill_at"`

	// light is the running light client (WithLightClient), not config.
	light *NeutrinoChain
}

// DefaultConfig is mainnet through the embedded light client with
// conservative fee bounds (the btcd backend's RPC host is btcd's regtest
// default on loopback).
func DefaultConfig() Config {
	return Config{
		Network:         "mainnet",
		Backend:         BackendNeutrino,
		Peers:           []string{},
		RPCHost:         "127.0.0.1:18334",
		RPCNoTLS:        true,
		MinFeeRate:      1,
		MaxFeeRate:      200,
		MaxFee:          100_000,
		FallbackFeeRate: 10,
		Confirmations:   3,
		ZeroConfMax:     10_000,
		SafetyMargin:    12,
		ChannelLifetime: 144 * 14,
		BumpAfter:       2,
		FundingTimeout:  144,
		Required:        RequiredAuto,
		CloseIdle:       DefaultCloseIdle,
		CloseAt:         DefaultCloseAt,
		PayoutSweep:     true,
		SweepAt:         DefaultSweepAt,
		SweepAfter:      DefaultSweepAfter,

		ChannelMinCapacity: 100_000,
		ChannelMaxCapacity: 10_000_000,
		ChannelVolumeHours: 24,
		ChannelRefillAt:    0.8,
	}
}

// Validate names the first bad key and why.
func (c *Config) Validate() error {
	if _, err := NetParams(c.Network); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	switch c.Backend {
	case BackendNeutrino:
		// A network without DNS seeds (regtest) and no peers is said
		// when payments start: the node still runs without them.
		for _, p := range c.Peers {
			if _, _, err := net.SplitHostPort(p); err != nil {
				return fmt.Errorf("peers: %q: want host:port (%v)", p, err)
			}
		}
		if c.FeeURL != "" {
			u, err := url.Parse(c.FeeURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("fee_url: %q is not an http(s) URL", c.FeeURL)
			}
		}
	case BackendBtcd:
		if c.RPCHost == "" {
			return errors.New("rpc_host: empty")
		}
	default:
		return fmt.Errorf("backend: want neutrino or btcd, not %q", c.Backend)
	}
	if c.MinFeeRate < 1 {
		return errors.New("min_fee_rate: must be at least 1 sat/vB (relay minimum)")
	}
	if c.MaxFeeRate < c.MinFeeRate {
		return fmt.Errorf("max_fee_rate: %d is below min_fee_rate %d", c.MaxFeeRate, c.MinFeeRate)
	}
	if c.FallbackFeeRate < c.MinFeeRate || c.FallbackFeeRate > c.MaxFeeRate {
		return fmt.Errorf("fallback_fee_rate: %d is outside [min_fee_rate, max_fee_rate]", c.FallbackFeeRate)
	}
	if c.MaxFee <= 0 {
		return errors.New("max_fee: must be positive")
	}
	if c.Confirmations < 1 {
		return errors.New("confirmations: must be at least 1")
	}
	if c.ZeroConfMax < 0 {
		return errors.New("zero_conf_max: must not be negative (0 waits for the confirmations always)")
	}
	if c.SafetyMargin < 1 {
		return errors.New("safety_margin: must be at least 1 block")
	}
	if c.ChannelLifetime <= c.SafetyMargin {
		return errors.New("channel_lifetime: must exceed safety_margin")
	}
	if c.CloseIdle < 0 {
		return fmt.Errorf("close_idle: %s is negative (0 turns idle closes off)", c.CloseIdle)
	}
	if c.CloseAt < 0 {
		return fmt.Errorf("close_at: %d is negative (0 turns balance closes off)", c.CloseAt)
	}
	if err := c.validateSweep(); err != nil {
		return err
	}
	if err := c.validateChannels(); err != nil {
		return err
	}
	if c.BumpAfter < 1 || 2*c.BumpAfter > c.SafetyMargin {
		return fmt.Errorf("bump_after: %d must be between 1 and half the safety_margin (%d): a close is broadcast safety_margin blocks before the expiry and must be bumped, up to max_fee_rate, before it", c.BumpAfter, c.SafetyMargin)
	}
	if c.FundingTimeout < 1 {
		return errors.New("funding_timeout: must be at least 1 block")
	}
	if c.PayoutAddress != "" && c.PayoutXpub != "" {
		return errors.New("payout_address and payout_xpub: set one, not both")
	}
	if err := c.validateRequired(); err != nil {
		return err
	}
	params, _ := NetParams(c.Network)
	if c.PayoutAddress != "" {
		a, err := btcutil.DecodeAddress(c.PayoutAddress, params)
		if err != nil || !a.IsForNet(params) {
			return fmt.Errorf("payout_address: %q is not an address on %s", c.PayoutAddress, c.Network)
		}
	}
	if c.PayoutXpub != "" {
		if _, err := hdkeychain.NewKeyFromString(c.PayoutXpub); err != nil {
			return fmt.Errorf("payout_xpub: %w", err)
		}
	}
	return nil
}

// NetParams maps a network name to its chain parameters.
func NetParams(name string) (*chaincfg.Params, error) {
	switch name {
	case "mainnet", "main", "bitcoin":
		return &chaincfg.MainNetParams, nil
	case "testnet", "testnet3":
		return &chaincfg.TestNet3Params, nil
	case "testnet4":
		return &chaincfg.TestNet4Params, nil
	case "signet":
		return &chaincfg.SigNetParams, nil
	case "regtest":
		return &chaincfg.RegressionNetParams, nil
	}
	return nil, fmt.Errorf("unknown network %q (want mainnet, testnet, testnet4, signet or regtest)", name)
}

// PayoutScript returns the output script for the seller's next close: the
// configured address, or the xpub's external child at index.
func (c *Config) PayoutScript(index uint32) ([]byte, error) {
	params, err := NetParams(c.Network)
	if err != nil {
		return nil, err
	}
	switch {
	case c.PayoutAddress != "":
		a, err := btcutil.DecodeAddress(c.PayoutAddress, params)
		if err != nil {
			return nil, fmt.Errorf("payout address: %w", err)
		}
		return txscript.PayToAddrScript(a)
	case c.PayoutXpub != "":
		x, err := hdkeychain.NewKeyFromString(c.PayoutXpub)
		if err != nil {
			return nil, fmt.Errorf("payout xpub: %w", err)
		}
		ext, err := x.Derive(0)
		if err != nil {
			return nil, fmt.Errorf("payout xpub: %w", err)
		}
		return childScript(ext, index, params)
	}
	return nil, errors.New("no payout_address or payout_xpub configured")
}

// clampFeeRate keeps a fee rate inside the configured bounds.
func (c *Config) clampFeeRate(r int64) int64 {
	if r < c.MinFeeRate {
		return c.MinFeeRate
	}
	if r > c.MaxFeeRate {
		return c.MaxFeeRate
	}
	return r
}

// checkFee refuses a transaction whose fee is above the configured bounds.
func (c *Config) checkFee(fee, vsize int64) error {
	if fee < 0 {
		return fmt.Errorf("%w: negative fee %d", ErrFeeBound, fee)
	}
	if fee > c.MaxFee {
		return fmt.Errorf("%w: fee %d sat exceeds max_fee %d", ErrFeeBound, fee, c.MaxFee)
	}
	if vsize > 0 && fee > c.MaxFeeRate*vsize {
		return fmt.Errorf("%w: fee rate %.1f sat/vB exceeds max_fee_rate %d", ErrFeeBound, float64(fee)/float64(vsize), c.MaxFeeRate)
	}
	return nil
}
