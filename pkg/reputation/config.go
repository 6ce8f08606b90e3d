// Package reputation owns each node's local, subjective view of its peers:
// observations from its own contracts, signed attestations from peers it
// trusts (counted only when they reference a contract both parties signed and
// that was paid), the trust graph with bounded-hop propagation, Beta-posterior
// scores with an explanation, seller selection with exploration (Thompson
// sampling), the spot-check policy, the connection gater that refuses peers in
// bad standing, and the /blackbox/reputation/1.0.0 exchange protocol.
//
// Nothing here blocks on the network except the exchange protocol's own
// stream handlers; the scoring state is in memory and written through a small
// Store interface that the node backs with its database.
//
// Wiring, for the node and the contract code:
//   - NewBook(Options{Config, Self, Store, Evidence, Log}) once per node;
//     Evidence is the contract/payment code's ContractEvidence.
//   - the buyer's ranker (pkg/contract's Rank, through the node) calls
//     Book.Rank(candidates, rng[, Uncheckable() | ForSpotCheck()]): the one
//     selection policy of the node, and the one the simulation (sim)
//     measures; ShouldSpotCheck decides whether to run a deterministic job
//     on a second seller, ResolveSpotCheck turns digests into verdicts.
//   - after each contract: Book.Observe(observation), then NewAttestation +
//     SealAttestation with the node key, and Exchange.Push to trusted peers.
//   - libp2p.ConnectionGater(NewGater(book, log)); call Gater.Sweep after
//     scores change.
package reputation

import (
	"errors"
	"fmt"
	"time"
)

// Config is the reputation subsystem's configuration (config section
// "reputation"). Start from DefaultConfig and call Validate.
type Config struct {
	// Threshold is the posterior mean below which a peer gets no work and is
	// refused by the connection gater (0..1). Default 0.45.
	Threshold float64 `mapstructure:"threshold"`
	// MinEvidence is how much evidence (in contract units) a peer needs
	// before Threshold can block it, so one honest failure does not (a
	// vanished job or a failed spot check does). Default 1.5.
	MinEvidence float64 `mapstructure:"min_evidence"`
	// PriorGood and PriorBad are the Beta prior pseudo-counts every peer
	// starts with. Default 1:1 (uniform): an unknown seller is worth a
	// coin flip, so a cheap unknown does not outbid proven sellers in
	// Thompson sampling; new sellers get work through exploration instead.
	PriorGood float64 `mapstructure:"prior_good"`
	PriorBad  float64 `mapstructure:"prior_bad"`
	// Exploration is the share of selections (0..1) that go to a candidate
	// with little evidence, so new honest sellers get their first job.
	// Default 0.15.
	Exploration float64 `mapstructure:"exploration"`
	// ExploreBelow is the evidence (contract units) under which a candidate
	// counts as new for exploration. Default 3.
	ExploreBelow float64 `mapstructure:"explore_below"`
	// HalfLife is the decay half-life of every observation and attestation.
	// Default 720h (30 days).
	HalfLife time.Duration `mapstructure:"half_life"`
	// SpotCheckAllBelow and SpotCheckFloor adapt spot checks per seller
	// (Config.SpotCheckRate): every deterministic job of a seller is run on
	// a second seller until it has SpotCheckAllBelow verified results in a
	// row (own, plus trusted attesters' weighted); after n of them, a job is
	// checked with probability 1/n, never less than SpotCheckFloor; a
	// mismatch starts over. Defaults 45 and 0.02: a seller that lies on
	// 10% of its contracts is caught within 50 of them with probability
	// 99.1% (CatchWithin; no policy can pass 99.5%, the chance that it
	// lies at least once), and a proven seller costs its buyers 2% more.
	// 60 catches no more within 50 and costs more than 5% of a settled
	// market's spending (make sim).
	SpotCheckAllBelow float64 `mapstructure:"spot_check_all_below"`
	SpotCheckFloor    float64 `mapstructure:"spot_check_floor"`
	// MaxHops bounds trust propagation through the graph. Default 4 (trust
	// also fades as the product of edge weights along the path).
	MaxHops int `mapstructure:"max_hops"`
	// AttestationWeight scales an attestation relative to this node's own
	// observation, before the attester's trust is applied (0..1). Default 0.5.
	AttestationWeight float64 `mapstructure:"attestation_weight"`
	// MaxPerAttester caps the evidence one attester can contribute about one
	// subject (contract units), so a single trusted peer cannot dominate.
	// Default 10 (one proven spot-check mismatch).
	MaxPerAttester float64 `mapstructure:"max_per_attester"`
	// MinPaidSats is the smallest paid amount for which an attestation
	// counts; cheaper contracts are treated as unpaid. Default 1000.
	MinPaidSats uint64 `mapstructure:"min_paid_sats"`
	// MaxAttestationBytes caps one signed attestation on the wire, checked
	// before decoding; it holds the contract and payment evidence. Default 8192.
	MaxAttestationBytes int `mapstructure:"max_attestation_bytes"`
	// MaxAttestationsPerStream caps one exchange stream. Default 64.
	MaxAttestationsPerStream int `mapstructure:"max_attestations_per_stream"`
	// RatePerMinute and RateBurst limit the attestations accepted from one
	// peer; beyond them the stream is reset and the peer is penalised.
	// Defaults 120 and 64.
	RatePerMinute float64 `mapstructure:"rate_per_minute"`
	RateBurst     int     `mapstructure:"rate_burst"`
	// StreamTimeout is the deadline of one exchange stream. Default 10s.
	StreamTimeout time.Duration `mapstructure:"stream_timeout"`
	// AttestationTTL is how long an attestation this node issues stays
	// valid. Default 2160h (90 days).
	AttestationTTL time.Duration `mapstructure:"attestation_ttl"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Threshold:                0.45,
		MinEvidence:              1.5,
		PriorGood:                1,
		PriorBad:                 1,
		Exploration:              0.15,
		ExploreBelow:             3,
		HalfLife:                 30 * 24 * time.Hour,
		SpotCheckAllBelow:        45,
		SpotCheckFloor:           0.02,
		MaxHops:                  4,
		AttestationWeight:        0.5,
		MaxPerAttester:           10,
		MinPaidSats:              1000,
		MaxAttestationBytes:      8192,
		MaxAttestationsPerStream: 64,
		RatePerMinute:            120,
		RateBurst:                64,
		StreamTimeout:            10 * time.Second,
		AttestationTTL:           90 * 24 * time.Hour,
	}
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("invalid reputation config")

// Validate names the first bad key and why.
func (c *Config) Validate() error {
	bad := func(key, why string, v any) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrConfig, key, v, why)
	}
	share := func(key string, v float64) error {
		if v < 0 || v > 1 || v != v {
			return bad(key, "must be between 0 and 1", v)
		}
		return nil
	}
	for _, s := range []struct {
		k string
		v float64
	}{
		{"threshold", c.Threshold}, {"exploration", c.Exploration},
		{"spot_check_floor", c.SpotCheckFloor},
		{"attestation_weight", c.AttestationWeight},
	} {
		if err := share(s.k, s.v); err != nil {
			return err
		}
	}
	switch {
	case c.MinEvidence < 0:
		return bad("min_evidence", "must not be negative", c.MinEvidence)
	case c.PriorGood <= 0:
		return bad("prior_good", "must be positive (a Beta prior needs both counts > 0)", c.PriorGood)
	case c.PriorBad <= 0:
		return bad("prior_bad", "must be positive (a Beta prior needs both counts > 0)", c.PriorBad)
	case c.SpotCheckAllBelow < 0 || c.SpotCheckAllBelow != c.SpotCheckAllBelow:
		return bad("spot_check_all_below", "must not be negative", c.SpotCheckAllBelow)
	case c.ExploreBelow < 0:
		return bad("explore_below", "must not be negative", c.ExploreBelow)
	case c.HalfLife < time.Minute:
		return bad("half_life", "must be at least 1m", c.HalfLife)
	case c.MaxHops < 1 || c.MaxHops > 6:
		return bad("max_hops", "must be between 1 and 6 (trust fades fast and paths explode)", c.MaxHops)
	case c.MaxPerAttester <= 0:
		return bad("max_per_attester", "must be positive", c.MaxPerAttester)
	case c.MaxAttestationBytes < 256 || c.MaxAttestationBytes > 64<<10:
		return bad("max_attestation_bytes", "must be between 256 and 65536", c.MaxAttestationBytes)
	case c.MaxAttestationsPerStream < 1:
		return bad("max_attestations_per_stream", "must be at least 1", c.MaxAttestationsPerStream)
	case c.RatePerMinute <= 0:
		return bad("rate_per_minute", "must be positive", c.RatePerMinute)
	case c.RateBurst < 1:
		return bad("rate_burst", "must be at least 1", c.RateBurst)
	case c.StreamTimeout <= 0:
		return bad("stream_timeout", "must be positive", c.StreamTimeout)
	case c.AttestationTTL < time.Hour:
		return bad("attestation_ttl", "must be at least 1h", c.AttestationTTL)
	}
	return nil
}
