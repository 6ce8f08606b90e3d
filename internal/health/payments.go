package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// ChainSource answers what the payment checks ask the chain (btcd's
// *payment.BtcdChain). Info must return within ctx.
type ChainSource interface {
	Info(ctx context.Context) (payment.ChainInfo, error)
}

// Check names of the payment side.
const (
	NamePayments = "payments"
	NameSync     = "chain sync"
	NameWallet   = "wallet"
	NameClock    = "clock"
)

// dialTimeout bounds the first connection to the chain source: a dead one
// must not hold up doctor, /healthz or serve.
const dialTimeout = 3 * time.Second

// Chain checks the chain source: configured, reachable, answering with
// these credentials, on payment.network ("payments"), caught up ("chain
// sync"), and compares this machine's clock with it ("clock"). src may be
// nil when no client could be made (the reason is then in the first check).
func Chain(ctx context.Context, cfg payment.Config, src ChainSource, now time.Time) []Check {
	noClock := Check{Name: NameClock, Status: Warn, Detail: "not compared: no chain source to compare with",
		Fix: "fix payments above; the clock is compared with the chain's"}
	if cfg.Backend == payment.BackendNeutrino {
		return lightChain(ctx, cfg, src, now, noClock)
	}
	if cfg.RPCUser == "" || cfg.RPCPass == "" {
		return []Check{{Name: NamePayments, Status: Fail,
			Detail: "not configured: no chain source (payment.rpc_user and payment.rpc_pass are empty)",
			Fix:    fmt.Sprintf("run btcd on %s (see README, \"Payments\") and set payment.rpc_host, payment.rpc_user and payment.rpc_pass", cfg.Network)},
			noClock}
	}
	if err := cfg.DialCheck(ctx, dialTimeout); err != nil {
		why := err.Error()
		var oe *net.OpError
		if errors.As(err, &oe) {
			why = oe.Err.Error() // "connect: connection refused"
		}
		return []Check{{Name: NamePayments, Status: Fail,
			Detail: fmt.Sprintf("btcd is not reachable at %s (payment.rpc_host): %s", cfg.RPCHost, why),
			Fix:    fmt.Sprintf("start btcd on %s (systemctl start btcd), or set payment.rpc_host to where it listens", cfg.Network)},
			noClock}
	}
	if src == nil {
		return []Check{{Name: NamePayments, Status: Fail, Detail: "no btcd client", Fix: "check payment.rpc_cert"}, noClock}
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := src.Info(ictx)
	if err != nil {
		return []Check{{Name: NamePayments, Status: Fail,
			Detail: fmt.Sprintf("btcd at %s does not answer: %v", cfg.RPCHost, err),
			Fix:    "check payment.rpc_user, payment.rpc_pass and payment.rpc_cert/rpc_notls against btcd's rpcuser, rpcpass and TLS settings"},
			noClock}
	}
	return []Check{ChainNetwork(cfg, info), Sync(cfg.Network, info, now), Clock(cfg.Network, info, now)}
}

// WithWallet puts the wallet check among the chain checks, before the
// clock, where doctor prints it.
func WithWallet(chain []Check, wallet Check) []Check {
	out := make([]Check, 0, len(chain)+1)
	for _, c := range chain {
		if c.Name == NameClock {
			out = append(out, wallet)
			wallet.Name = ""
		}
		out = append(out, c)
	}
	if wallet.Name != "" {
		out = append(out, wallet)
	}
	return out
}

// ChainNetwork checks that the chain source follows payment.network.
func ChainNetwork(cfg payment.Config, info payment.ChainInfo) Check {
	want := payment.CanonicalNetwork(cfg.Network)
	if info.Network != want {
		got := info.Network
		if got == "" {
			got = "an unknown chain"
		}
		return Check{Name: NamePayments, Status: Fail,
			Detail: fmt.Sprintf("btcd at %s follows %s, but payment.network is %s", cfg.RPCHost, got, cfg.Network),
			Fix:    fmt.Sprintf("point payment.rpc_host at a btcd on %s (btcd --%s), or set payment.network: %s", cfg.Network, btcdFlag(want), info.Network)}
	}
	return Check{Name: NamePayments, Status: OK, Detail: fmt.Sprintf("btcd at %s answers, on %s", cfg.RPCHost, want)}
}

func btcdFlag(network string) string {
	switch network {
	case "mainnet":
		return "mainnet (the default)"
	case "testnet":
		return "testnet"
	}
	return network
}

// Sync checks that the chain source has caught up: its tip is recent
// (btcd's own test, 24 h, fails; over 2 h warns). Regtest has no network
// to catch up with.
func Sync(network string, info payment.ChainInfo, now time.Time) Check {
	age := now.Sub(info.TipTime)
	detail := fmt.Sprintf("tip %d from %s", info.Height, ago(age))
	if payment.CanonicalNetwork(network) == "regtest" {
		return Check{Name: NameSync, Status: OK, Detail: "regtest " + detail}
	}
	switch {
	case age > 24*time.Hour:
		return Check{Name: NameSync, Status: Fail, Detail: "btcd is still catching up: " + detail,
			Fix: "wait until btcd has synced (btcctl getblockcount rises to the network's height); payments cannot be checked before"}
	case age > 2*time.Hour:
		return Check{Name: NameSync, Status: Warn, Detail: "btcd may be behind: " + detail,
			Fix: "check btcd's peers (btcctl getpeerinfo); a block every 10 minutes is usual"}
	}
	return Check{Name: NameSync, Status: OK, Detail: detail}
}

// Clock thresholds: past clockWarn the clock drifts (no NTP?); past
// clockFail this node's offers and contracts look expired or not yet
// valid to its peers.
const (
	clockWarn = 2 * time.Minute
	clockFail = 10 * time.Minute
	// maxFuture is how far ahead of the network a block's time may be.
	maxFuture = 2 * time.Hour
)

// Clock compares this machine's clock with the chain source's peers (btcd's
// median time offset) and with the chain tip's time, which can be ahead of
// a correct clock by at most 2 h — except on regtest, whose blocks, mined
// faster than one a second, run ahead of any clock.
func Clock(network string, info payment.ChainInfo, now time.Time) Check {
	fix := "synchronise the clock (timedatectl set-ntp true, or chrony/ntpd)"
	regtest := payment.CanonicalNetwork(network) == "regtest"
	if ahead := info.TipTime.Sub(now); ahead > maxFuture+clockFail && !regtest {
		return Check{Name: NameClock, Status: Fail,
			Detail: fmt.Sprintf("behind by at least %s: the chain tip %d is from %s in the future", (ahead - maxFuture).Round(time.Second), info.Height, ahead.Round(time.Second)),
			Fix:    fix}
	}
	if !info.HasTimeOffset || info.Peers == 0 {
		if regtest {
			return Check{Name: NameClock, Status: OK, Detail: "not compared: regtest, and btcd has no peers to compare clocks with"}
		}
		return Check{Name: NameClock, Status: OK, Detail: "not behind the chain tip's time (btcd has no peers to compare clocks with)"}
	}
	off := info.TimeOffset
	if off < 0 {
		off = -off
	}
	detail := fmt.Sprintf("%s off btcd's %d peers' median", off, info.Peers)
	switch {
	case off > clockFail:
		return Check{Name: NameClock, Status: Fail, Detail: detail, Fix: fix}
	case off > clockWarn:
		return Check{Name: NameClock, Status: Warn, Detail: detail, Fix: fix}
	}
	return Check{Name: NameClock, Status: OK, Detail: detail}
}

// Passphrase is where the wallet passphrase came from and what it is, or
// why there is none.
type Passphrase struct {
	Value []byte
	// Source names where it was read (for example
	// "BLACKBOX_WALLET_PASSPHRASE"), for the messages.
	Source string
	Err    error
}

// Opener opens the wallet for real (btcwallet, connected to the chain
// source) and closes it again.
type Opener func(ctx context.Context) error

// Wallet checks that the wallet opens with the passphrase: first offline
// (the seed in dir decrypts, and is for payment.network), then, when open
// is not nil (the chain source answers), by opening it for real.
func Wallet(ctx context.Context, cfg payment.Config, dir string, pass Passphrase, open Opener) Check {
	if pass.Err != nil {
		return Check{Name: NameWallet, Status: Fail, Detail: pass.Err.Error(),
			Fix: "give the passphrase: payment.passphrase_file, a systemd credential wallet-passphrase (LoadCredential=), or BLACKBOX_WALLET_PASSPHRASE (see README, \"Run it as a service\")"}
	}
	seed := filepath.Join(dir, "seed.json")
	b, err := payment.ReadBackup(seed)
	if errors.Is(err, os.ErrNotExist) {
		return Check{Name: NameWallet, Status: Warn, Detail: fmt.Sprintf("no wallet in %s yet: `blackbox serve` creates one with the passphrase from %s", dir, pass.Source),
			Fix: "after the first start, back it up: blackbox wallet backup FILE"}
	}
	if err != nil {
		return Check{Name: NameWallet, Status: Fail, Detail: err.Error(), Fix: "restore the wallet from its backup: blackbox wallet restore FILE"}
	}
	if payment.CanonicalNetwork(b.Network) != payment.CanonicalNetwork(cfg.Network) {
		return Check{Name: NameWallet, Status: Fail,
			Detail: fmt.Sprintf("the wallet in %s is for %s, but payment.network is %s", dir, b.Network, cfg.Network),
			Fix:    fmt.Sprintf("set payment.network: %s, or use a data dir for %s", b.Network, cfg.Network)}
	}
	if _, err := b.Open(pass.Value); err != nil {
		return Check{Name: NameWallet, Status: Fail,
			Detail: fmt.Sprintf("the wallet in %s does not open with the passphrase from %s: %v", dir, pass.Source, err),
			Fix:    "give the passphrase the wallet was created with"}
	}
	if open == nil {
		return Check{Name: NameWallet, Status: Warn, Detail: fmt.Sprintf("the seed in %s opens with the passphrase from %s; the wallet itself is not tried without a chain source", dir, pass.Source),
			Fix: "fix payments above"}
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := open(octx); err != nil {
		return Check{Name: NameWallet, Status: Fail, Detail: fmt.Sprintf("the wallet in %s does not open: %v", dir, err),
			Fix: "see the error; a damaged wallet database is rebuilt by `blackbox wallet restore FILE` from its backup"}
	}
	return Check{Name: NameWallet, Status: OK, Detail: fmt.Sprintf("opens with the passphrase from %s and is synced with btcd", pass.Source)}
}

// ago says how long ago d was, roughly.
func ago(d time.Duration) string {
	switch {
	case d > -time.Minute && d < time.Minute:
		return "just now"
	case d < 0:
		return (-d).Round(time.Second).String() + " in the future"
	case d < 48*time.Hour:
		return d.Round(time.Minute).String() + " ago"
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
