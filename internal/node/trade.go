package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcutil"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// WalletDir is the wallet's directory inside the data dir.
const WalletDir = "wallet"

// BackupFile is the channel backup's name inside the data dir.
const BackupFile = "channels.backup"

// BackupPath is the channel backup of a data dir: payment.backup_file, or
// BackupFile in the data dir.
func BackupPath(dataDir string, cfg payment.Config) string {
	if cfg.BackupFile != "" {
		return cfg.BackupFile
	}
	return filepath.Join(dataDir, BackupFile)
}

// startSandbox connects to containerd. Without it the node still runs (it
// can buy, and it shows why it does not sell), so a failure is not fatal.
func (n *Node) startSandbox(ctx context.Context) {
	cfg := n.cfg.Sandbox
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(n.cfg.DataDir, "sandbox")
	}
	if st, err := os.Stat(cfg.Address); err != nil || st.Mode()&os.ModeSocket == 0 {
		n.noSell = append(n.noSell, fmt.Sprintf("sandbox unavailable: no containerd socket at %s (sandbox.address): run `blackbox doctor`", cfg.Address))
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Jobs' streams go through a logger containerd runs, so that they
	// outlive this process; the contracts the seller resumes at start keep
	// their containers (reattach.go).
	cfg.LogBinary = logBinary()
	keep, err := contract.Resumable(store.NewContractStore(n.db), contract.RoleSeller, n.cfg.Contract.RestartGrace, time.Now())
	if err != nil {
		n.log.Warn("read the running contracts to resume", "err", err)
	}
	sb, err := sandbox.New(sctx, cfg, n.log, sandbox.WithKeep(func(id string) bool { return keep[id] }))
	if err != nil {
		n.noSell = append(n.noSell, fmt.Sprintf("sandbox unavailable (%v): run `blackbox doctor`", err))
		n.log.Warn("not selling: sandbox unavailable", "err", err)
		return
	}
	// Offer only the runtimes that run a real job here (each probe has
	// its own time: sctx bounds connecting).
	ok, failed := sb.ProbeRuntimes(ctx, n.cfg.Offer.Runtimes...)
	for _, rt := range n.cfg.Offer.Runtimes {
		if err := failed[rt]; err != nil {
			n.log.Warn("runtime not offered: its probe job failed", "runtime", rt, "err", err)
			if errors.Is(err, context.DeadlineExceeded) {
				// Slow, not broken (a loaded machine): probed again
				// once the node runs (reprobeRuntimes).
				n.reprobe = append(n.reprobe, rt)
			}
		}
	}
	if len(ok) == 0 {
		sb.Close()
		n.noSell = append(n.noSell, fmt.Sprintf("no runtime of offer.runtimes (%s) can run a job here: run `blackbox doctor`", strings.Join(n.cfg.Offer.Runtimes, ", ")))
		return
	}
	n.runtimes = ok
	n.sandbox = sb
	n.push(sb.Close)
}

// defaultRuntime is the runtime of a contract that names none: the
// sandbox's configured one if it is offered, else the first offered.
func (n *Node) defaultRuntime() string {
	rts := n.offeredRuntimes()
	if slices.Contains(rts, n.cfg.Sandbox.Runtime) {
		return n.cfg.Sandbox.Runtime
	}
	return rts[0]
}

// offeredRuntimes are the runtimes the offer names: those whose probe job
// ran (at start, or later: reprobeRuntimes).
func (n *Node) offeredRuntimes() []string {
	n.runtimesMu.Lock()
	defer n.runtimesMu.Unlock()
	return slices.Clone(n.runtimes)
}

// reprobeRuntimes probes again the runtimes whose probe at start ran out
// of time (a loaded machine, not a broken runtime) and offers each as soon
// as its probe job runs, until ctx ends or delays (sandbox.ReprobeDelays)
// are spent.
func (n *Node) reprobeRuntimes(ctx context.Context, delays []time.Duration) {
	left := slices.Clone(n.reprobe)
	for _, d := range delays {
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		left = slices.DeleteFunc(left, func(rt string) bool {
			pctx, cancel := context.WithTimeout(ctx, 2*n.sandbox.ProbeTimeout())
			defer cancel()
			if err := n.sandbox.Probe(pctx, rt); err != nil {
				n.log.Info("runtime still not offered: its probe job failed again", "runtime", rt, "err", err)
				return false
			}
			n.runtimesMu.Lock()
			n.runtimes = append(n.runtimes, rt)
			n.runtimesMu.Unlock()
			n.log.Info("runtime offered: its probe job ran", "runtime", rt)
			n.reoffer()
			return true
		})
	}
	for _, rt := range left {
		n.log.Warn("runtime not offered: its probe job keeps failing; `blackbox doctor` checks it", "runtime", rt)
	}
}

// WalletPassphrase reads the wallet passphrase from payment.passphrase_file,
// else the systemd credential wallet-passphrase, else
// BLACKBOX_WALLET_PASSPHRASE (see PassphraseOf).
func WalletPassphrase(cfg payment.Config) ([]byte, error) {
	p := PassphraseOf(cfg)
	return p.Value, p.Err
}

// startPayments connects to btcd, opens (or on first start creates) the
// wallet and starts the channel manager. Without payments the node neither
// buys nor sells, but still runs and says why. A chain source that does not
// answer at start turns payments off only under payment.required (serve
// then exits with the reason); otherwise the node starts with the wallet's
// keys from its seed and keeps trying (chainsource.go), selling and
// funding once the chain source answers.
func (n *Node) startPayments(ctx context.Context) error {
	cfg := n.cfg.Payment
	off := func(why string) error {
		n.noSell = append(n.noSell, why)
		n.noBuy = why
		n.log.Warn("payments off", "why", why)
		return nil
	}
	if cfg.Backend == payment.BackendBtcd && cfg.RPCUser == "" {
		return off("payments not configured: set payment.rpc_host, payment.rpc_user and payment.rpc_pass for btcd (or payment.backend: neutrino)")
	}
	pass, err := WalletPassphrase(cfg)
	if err != nil {
		return off(err.Error())
	}
	params, err := payment.NetParams(cfg.Network)
	if err != nil {
		return off(err.Error())
	}
	chain, cfg, err := payment.OpenChain(cfg, n.cfg.DataDir, n.log)
	if err != nil {
		return off(fmt.Sprintf("%s: %v", cfg.Backend, err))
	}
	n.push(func() error { chain.Close(); return nil })
	dir := filepath.Join(n.cfg.DataDir, WalletDir)
	// madeSeed: this start made the node's seed (no seed file was there),
	// so nothing on chain was ever paid to its keys.
	madeSeed := false
	open := func(ctx context.Context) (*payment.Wallet, error) {
		w, err := payment.OpenWallet(ctx, dir, pass, cfg, n.log)
		if errors.Is(err, payment.ErrNoWallet) {
			madeSeed = true
			n.log.Info("creating the node's wallet on "+cfg.Network+"; back up its seed with `blackbox wallet backup FILE` (encrypted with the wallet passphrase: keep both)", "network", cfg.Network, "dir", dir)
			w, err = payment.CreateWallet(ctx, dir, pass, nil, cfg, n.log)
		}
		return w, err
	}
	required := cfg.IsRequired(UnderSystemd())
	var w *payment.Wallet
	why := n.waitChain(ctx, cfg, chain)
	if why == "" {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		w, err = open(wctx)
		cancel()
		if err != nil {
			why = fmt.Sprintf("wallet: %v", err)
			if required || errors.Is(err, payment.ErrPassphrase) {
				return off(why)
			}
		}
	} else if required {
		return off(why)
	}
	var keys *payment.Keyring
	var seed []byte
	if w != nil {
		keys = w.Keyring()
	} else {
		// The chain source does not answer: the keys come from the seed
		// (made now on a first start), the wallet opens later.
		if !payment.WalletExists(dir) {
			madeSeed = true
			n.log.Info("creating the node's wallet on "+cfg.Network+"; back up its seed with `blackbox wallet backup FILE` (encrypted with the wallet passphrase: keep both)", "network", cfg.Network, "dir", dir)
			if _, err := payment.CreateWalletFiles(dir, pass, cfg); err != nil {
				return off(fmt.Sprintf("wallet: %v", err))
			}
		}
		if seed, err = payment.ReadSeed(dir, pass); err != nil {
			return off(fmt.Sprintf("wallet: %v", err))
		}
		if keys, err = payment.NewKeyring(seed, params); err != nil {
			return off(fmt.Sprintf("wallet: %v", err))
		}
		n.log.Warn("chain source down at start: payments start once it answers", "why", why)
	}
	tips := newSharedTip(chain, tipAge)
	lw := newLiveWallet(cfg.Backend, chain, keys, n.log)
	lw.tipOf = tips.Tip
	lw.open, lw.onChange = open, n.reoffer
	lw.create = func(ctx context.Context, b *payment.SeedBackup) (*payment.Wallet, error) {
		return payment.CreateWallet(ctx, dir, pass, b, cfg, n.log)
	}
	lw.why = func(ctx context.Context) string { return n.chainDownReason(ctx, chain) }
	lw.started(w, why)
	n.push(lw.close)
	if cfg.PayoutAddress == "" && cfg.PayoutXpub == "" {
		var addr btcutil.Address
		if w != nil {
			addr, err = w.Address(ctx)
		} else {
			// The wallet's first address, which it watches once it has
			// handed out one: ask for one when it opens.
			addr, err = payment.FirstAddress(seed, params)
			lw.afterOpen = func(ctx context.Context, w *payment.Wallet) {
				if _, err := w.Address(ctx); err != nil {
					n.log.Warn("wallet address", "err", err)
				}
				lw.afterOpen = nil
			}
		}
		if err != nil {
			return fmt.Errorf("payout address: %w", err)
		}
		cfg.PayoutAddress = addr.EncodeAddress()
		cfg.PayoutSweep = false // the wallet's own address: its closes are bumped by a child already
		n.log.Info("no payment.payout_address: seller payouts go to the node's wallet", "address", cfg.PayoutAddress)
	}
	// Every channel change reaches the backup file outside the database
	// before it is acknowledged (`blackbox restore` reads it back).
	backup, err := payment.NewBackupStore(store.NewPaymentStore(n.db), BackupPath(n.cfg.DataDir, cfg))
	if err != nil {
		return err
	}
	m, err := payment.NewManager(payment.ManagerConfig{
		Config: cfg, Chain: chain, Store: n.watchFees(backup),
		Keys: keys, Funder: n.watchFunding(lw), Log: n.log,
		Signer: lw, Coins: lw, OnFail: n.channelFailed, HoldScanFrom: lw.HoldScanFrom, NewSeed: madeSeed,
	})
	if err != nil {
		return fmt.Errorf("payment manager: %w", err)
	}
	n.wallet, n.chain, n.tips, n.payments, n.payCfg = lw, chain, tips, m, cfg
	return nil
}

// tickChain feeds every new block to the payment manager (confirmations,
// closes before expiry, refunds after it).
func (n *Node) tickChain(ctx context.Context) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.wallet.run(ctx) }()
	last := int32(-1)
	lastErr := "" // a failing tick retries every 2 s: warn once per error
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		tip, err := n.tips.Tip(ctx)
		n.metrics.chainTip(tip, err)
		if err == nil && tip != last {
			if err := n.payments.Tick(ctx); err != nil && ctx.Err() == nil {
				lvl := slog.LevelWarn
				if err.Error() == lastErr {
					lvl = slog.LevelDebug
				}
				lastErr = err.Error()
				n.log.Log(ctx, lvl, "payment tick", "tip", tip, "err", err)
			} else {
				last, lastErr = tip, ""
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// buyerChannels is how the buyer sizes the channels it opens (precheck
// tells the user the same numbers): payment.channel_* keys.
func (n *Node) buyerChannels() payment.PayerConfig { return n.cfg.Payment.Payer() }

// startContracts starts the seller engine (when the node can sell) and the
// buyer engine (when it can pay).
func (n *Node) startContracts(ctx context.Context) error {
	st := store.NewContractStore(n.db)
	n.rebuildPaid(st)
	cc := n.cfg.Contract
	if n.sandbox != nil && n.payments != nil {
		sc := contract.SellerConfig{
			Network: payment.CanonicalNetwork(n.cfg.Payment.Network),
			Host:    n.host, Key: n.key, Store: st,
			Runner:   sandboxRunner{sb: n.sandbox, defaultRuntime: n.defaultRuntime()},
			Payments: escrowReceiver{channelReceiver: &channelReceiver{m: n.payments, paid: n.history.paid}, n: n},
			Offer: func() *offer.Offer {
				o, _ := n.pub.Current()
				if o == nil || o.Resources.CPUMillis == 0 {
					return nil
				}
				return o
			},
			Capacity: func() offer.Resources {
				s := n.meter.Snapshot()
				return toResources(s.Spare.Add(s.Held))
			},
			WorkDir: filepath.Join(n.cfg.DataDir, "work"),
			Log:     n.log,
			OnPhase: n.metrics.phase,
			// What real transfers achieve corrects the declared uplink
			// the offer advertises (it can only lower it).
			OnThroughput: func(bps float64) {
				if n.meter != nil {
					n.meter.ObserveThroughput(bps)
				}
			},
		}
		cc.ApplySeller(&sc)
		if err := os.MkdirAll(sc.WorkDir, 0o700); err != nil {
			return err
		}
		seller, err := contract.NewSeller(sc)
		if err != nil {
			return fmt.Errorf("contract seller: %w", err)
		}
		n.hookSeller(seller)
		if err := seller.Start(ctx); err != nil {
			return fmt.Errorf("start contract seller: %w", err)
		}
		n.seller = seller
		n.push(seller.Close)
	} else if n.sandbox != nil {
		// No seller to resume them: the jobs kept at start go.
		for _, id := range n.sandbox.Adopted(ctx) {
			if err := n.sandbox.Discard(ctx, id); err != nil {
				n.log.Warn("remove a job no contract resumes", "contract", id, "err", err)
			}
		}
	}
	if n.payments != nil {
		key, err := n.wallet.Keyring().Key(payment.FamilyChannelBuyer, 0)
		if err != nil {
			return err
		}
		n.payer = payment.NewPayer(n.payments, n.buyerChannels())
		bc := contract.BuyerConfig{
			Host: n.host, Key: n.key, Store: st,
			Payer:      escrowPayer{channelPayer: channelPayer{p: n.payer}, n: n},
			PaymentKey: key.PubKey().SerializeCompressed(),
			Network:    payment.CanonicalNetwork(n.cfg.Payment.Network),
			Blobs:      contract.DirBlobs(n.BlobDir()),
			CheckImage: func(r io.Reader) error { return sandbox.ValidateArchive(r, math.MaxInt64) },
			Find:       n.disc.Find,
			Precheck:   n.precheck,
			ResultDir:  n.ResultDir(),
			Reputation: bookRanking{b: n.book, a: n.attester},
			Log:        n.log,
			OnPhase:    n.metrics.phase,
		}
		cc.ApplyBuyer(&bc)
		buyer, err := contract.NewBuyer(bc)
		if err != nil {
			return fmt.Errorf("contract buyer: %w", err)
		}
		if err := buyer.Start(ctx); err != nil {
			return fmt.Errorf("start contract buyer: %w", err)
		}
		n.buyer = buyer
		n.push(buyer.Close)
	}
	return nil
}

// BlobDir holds image tarballs and inputs a buyer ships, by digest.
func (n *Node) BlobDir() string { return BlobDir(n.cfg.DataDir) }

// BlobDir is the blob directory of a data dir (the CLI adds files there).
func BlobDir(dataDir string) string { return filepath.Join(dataDir, "blobs") }

// ResultDir holds the results of this node's jobs, per contract.
func (n *Node) ResultDir() string { return filepath.Join(n.cfg.DataDir, "results") }

// held is what running contracts hold, for the meter.
func (n *Node) held() meter.Capacity {
	if n.seller == nil {
		return meter.Capacity{}
	}
	return n.seller.Held()
}
