package node

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// DefaultPort is blackbox's default TCP and UDP (QUIC) port.
const DefaultPort = 7460

// Config is the whole node's typed configuration, unmarshalled once from
// flags, environment and the config file by internal/cli. Keys are the
// mapstructure tags; configs/blackbox.yaml documents each one.
type Config struct {
	// DataDir holds the identity, the database, the default config and the
	// local API socket. Set from --data-dir, not from the file.
	DataDir string `mapstructure:"-"`
	// ConfigFile is the file the configuration was read from, where live
	// policy changes are written. Set by the CLI, not from the file.
	ConfigFile string `mapstructure:"-"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `mapstructure:"log_level"`
	// Listen are the libp2p listen multiaddrs (TCP and QUIC).
	Listen []string `mapstructure:"listen"`
	// Bootstrap are multiaddrs with /p2p/ peer IDs of nodes to join through.
	Bootstrap []string `mapstructure:"bootstrap"`
	// MDNS finds blackbox nodes on the local network with no bootstrap.
	MDNS bool `mapstructure:"mdns"`
	// Region is a coarse location advertised in offers, e.g. "eu".
	Region string `mapstructure:"region"`
	// MetricsAddr, if set, serves Prometheus metrics at http://ADDR/metrics.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// DashboardAddr serves the web dashboard at http(s)://ADDR/; empty: off.
	DashboardAddr string `mapstructure:"dashboard_addr"`
	// DashboardTLSCert and DashboardTLSKey (PEM files) serve it over TLS.
	DashboardTLSCert string `mapstructure:"dashboard_tls_cert"`
	DashboardTLSKey  string `mapstructure:"dashboard_tls_key"`
	// DashboardAllowHTTP lets a non-loopback DashboardAddr serve plain HTTP.
	DashboardAllowHTTP bool `mapstructure:"dashboard_allow_http"`
	// SocketGroup, if set, is a group whose members may use the local API
	// socket (made 0660, the data dir 0710); empty: the node's user only.
	SocketGroup string `mapstructure:"socket_group"`
	// ConnLow and ConnHigh are the connection manager's watermarks.
	ConnLow  int `mapstructure:"conn_low"`
	ConnHigh int `mapstructure:"conn_high"`
	// Network is reachability across NATs: AutoNAT, port mapping, the
	// DHT's mode, relays and hole punching.
	Network NetworkConfig `mapstructure:"network"`
	// Offer sets the terms of this node's offers.
	Offer OfferConfig `mapstructure:"offer"`
	// Meter is the operator's selling policy and prices.
	Meter meter.Config `mapstructure:"meter"`
	// Contract sets the contract engines' timeouts, limits and exploration.
	Contract contract.Config `mapstructure:"contract"`
	// Sandbox is how jobs run (containerd).
	Sandbox sandbox.Config `mapstructure:"sandbox"`
	// Payment is the Bitcoin side: btcd, wallet, payouts, fee bounds.
	Payment payment.Config `mapstructure:"payment"`
	// Reputation is this node's view of its peers.
	Reputation reputation.Config `mapstructure:"reputation"`
	// Arbiter makes the node an escrow arbiter; it also sets how the
	// node releases the escrows it buys through.
	Arbiter ArbiterConfig `mapstructure:"arbiter"`
}

// OfferConfig is the contract terms a seller advertises.
type OfferConfig struct {
	// TTL is how long each signed offer is valid; it is republished at half.
	TTL time.Duration `mapstructure:"ttl"`
	// MinDuration and MaxDuration bound the contracts accepted.
	MinDuration time.Duration `mapstructure:"min_duration"`
	MaxDuration time.Duration `mapstructure:"max_duration"`
	// BillingInterval is how often the buyer pays in advance.
	BillingInterval time.Duration `mapstructure:"billing_interval"`
	// Runtimes are the sandbox runtimes offered (runc, crun, runsc). Only
	// those that run the sandbox's probe job at start are listed in the
	// offer.
	Runtimes []string `mapstructure:"runtimes"`
}

// DefaultConfig is what a node runs with no config file at all.
func DefaultConfig() Config {
	return Config{
		LogLevel: "info",
		Listen: []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		},
		Bootstrap: []string{},
		MDNS:      true,
		ConnLow:   64,
		ConnHigh:  256,
		Network:   DefaultNetworkConfig(),
		Offer: OfferConfig{
			TTL:             10 * time.Minute,
			MinDuration:     time.Minute,
			MaxDuration:     24 * time.Hour,
			BillingInterval: 10 * time.Second,
			Runtimes:        []string{"runc"},
		},
		Meter:      meter.DefaultConfig(),
		Contract:   contract.DefaultConfig(),
		Sandbox:    sandbox.DefaultConfig(),
		Payment:    payment.DefaultConfig(),
		Reputation: reputation.DefaultConfig(),
		Arbiter:    DefaultArbiterConfig(),

		// On loopback: other machines need TLS and the token.
		DashboardAddr: "127.0.0.1:7461",
	}
}

// Validate checks every key and names the ones that are wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if len(c.Listen) == 0 {
		bad("listen", "at least one listen address is needed")
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			bad("listen", "%q is not a multiaddr: %v", a, err)
		}
	}
	if _, err := c.BootstrapPeers(); err != nil {
		bad("bootstrap", "%v", err)
	}
	if len(c.Region) > offer.MaxRegionLen {
		bad("region", "at most %d characters", offer.MaxRegionLen)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("metrics_addr", "must be host:port: %v", err)
		}
	}
	if err := c.dashboard().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ConnLow <= 0 || c.ConnHigh < c.ConnLow {
		bad("conn_low", "need 0 < conn_low (%d) <= conn_high (%d)", c.ConnLow, c.ConnHigh)
	}
	if err := c.Network.Validate(); err != nil {
		errs = append(errs, err)
	}
	o := c.Offer
	if o.TTL < time.Minute || o.TTL > offer.MaxTTL {
		bad("offer.ttl", "must be between 1m and %s, not %s", offer.MaxTTL, o.TTL)
	}
	if o.MinDuration < time.Second || o.MaxDuration < o.MinDuration {
		bad("offer.min_duration", "need 1s <= min_duration (%s) <= max_duration (%s)", o.MinDuration, o.MaxDuration)
	}
	if o.BillingInterval < time.Second || o.BillingInterval > o.MaxDuration {
		bad("offer.billing_interval", "must be between 1s and max_duration, not %s", o.BillingInterval)
	}
	if len(o.Runtimes) == 0 || len(o.Runtimes) > offer.MaxRuntimes {
		bad("offer.runtimes", "list 1 to %d runtimes", offer.MaxRuntimes)
	}
	for _, r := range o.Runtimes {
		if !slices.Contains(sandbox.Runtimes, r) {
			bad("offer.runtimes", "unknown runtime %q (%s)", r, strings.Join(sandbox.Runtimes, ", "))
		}
	}
	if err := c.Meter.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Contract.Validate(); err != nil {
		errs = append(errs, err)
	}
	// These sections name keys relative to themselves.
	if err := c.Sandbox.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("sandbox.%w", err))
	}
	if err := c.Payment.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("payment.%w", err))
	}
	if err := c.Reputation.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("reputation: %w", err))
	}
	if err := c.Arbiter.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BootstrapPeers parses the bootstrap multiaddrs, merging addresses of the
// same peer.
func (c *Config) BootstrapPeers() ([]peer.AddrInfo, error) {
	return peerAddrs("bootstrap", c.Bootstrap)
}

// peerAddrs parses multiaddrs with /p2p/ peer IDs (what names the list in
// errors), merging addresses of the same peer.
func peerAddrs(what string, ss []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a multiaddr: %v", s, err)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("each %s address needs a /p2p/PEER_ID: %v", what, err)
	}
	return infos, nil
}
