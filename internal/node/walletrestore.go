package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// `blackbox wallet restore FILE` while the daemon runs: the node replaces
// its wallet with the one the seed backup restores, without a restart.
//
// Channels, escrows and contracts are keyed by the wallet's seed, so the
// restore is refused, naming them, while any is under way; so is a close
// output waiting at a hold key to be swept, unless the backup is of the same
// seed (its hold keys are the same: the sweep goes on). Otherwise the
// node stops selling and buying (its offer is withdrawn, submit refused),
// closes the wallet, moves its directory aside (kept: its seed may still
// own coins), writes the restored wallet in its place with the same files
// and passphrase rules as the offline restore, rescans from the backup's
// birthday, swaps the channel keys in place (payment.Keyring.Replace),
// gives the buyer engine its new payment key and a wallet-derived payout
// address its new address, and sells and buys again. The backup is read
// and its seed decrypted before anything changes, so a wrong file or
// passphrase changes nothing; a failure after that puts the old wallet
// back.

var errRestoring = errors.New("the wallet is being restored (`blackbox wallet restore`): payments resume when it is done")

// walletRestoreTimeout bounds writing, opening and rescanning the
// restored wallet.
const walletRestoreTimeout = 5 * time.Minute

// WalletRestore implements api.WalletRestorer.
func (n *Node) WalletRestore(ctx context.Context, raw []byte) (api.RestoreResult, error) {
	var res api.RestoreResult
	if err := n.needPayments(); err != nil {
		return res, err
	}
	cfg := n.payCfg
	var b payment.SeedBackup
	if err := json.Unmarshal(raw, &b); err != nil || b.Network == "" {
		if err == nil {
			err = errors.New("no network")
		}
		return res, fmt.Errorf("%w: not a wallet seed backup (the file `blackbox wallet backup` writes): %v", api.ErrBadRequest, err)
	}
	if b.Network != cfg.Network {
		return res, fmt.Errorf("%w: restore wallet: backup is for %s, this node runs on %s", api.ErrBadRequest, b.Network, cfg.Network)
	}
	pp := PassphraseOf(n.cfg.Payment)
	if pp.Err != nil {
		return res, pp.Err
	}
	seed, err := b.Open(pp.Value)
	if err != nil {
		return res, fmt.Errorf("%w: restore wallet: %w (a backup opens only with the wallet passphrase it was written under; this node's comes from %s): nothing changed", api.ErrRefused, err, pp.Source)
	}
	params, err := payment.NetParams(cfg.Network)
	if err != nil {
		return res, err
	}
	restored, err := payment.NewKeyring(seed, params)
	if err != nil {
		return res, fmt.Errorf("%w: restore wallet: %w", api.ErrBadRequest, err)
	}
	if !n.restoreMu.TryLock() {
		return res, fmt.Errorf("%w: a wallet restore is already running", api.ErrRefused)
	}
	defer n.restoreMu.Unlock()
	if busy := n.keyedBySeed(restored); busy != "" {
		return res, fmt.Errorf("%w: %s", api.ErrRefused, busy)
	}
	// Stop selling and buying, then look again: a contract may have been
	// agreed between the first look and the stop.
	n.restoring.Store(true)
	n.reoffer()
	defer func() {
		n.restoring.Store(false)
		n.reoffer()
	}()
	if busy := n.keyedBySeed(restored); busy != "" {
		return res, fmt.Errorf("%w: %s", api.ErrRefused, busy)
	}
	if !n.wallet.chainUp() {
		return res, fmt.Errorf("%w: restore wallet: %w", api.ErrUnavailable, n.wallet.notUp())
	}
	n.log.Info("wallet restore: replacing the wallet", "network", b.Network, "birthday", time.Unix(b.Birthday, 0).UTC())
	began := time.Now()
	w, prev, err := n.wallet.restore(ctx, filepath.Join(n.cfg.DataDir, WalletDir), &b)
	if err != nil {
		return res, err
	}
	// The restored seed's hold keys are scanned for outputs waiting to be
	// swept (none when it is the seed restored over itself: its scan ran).
	n.payments.RescanHolds()
	if n.buyer != nil {
		key, err := n.wallet.Keyring().Key(payment.FamilyChannelBuyer, 0)
		if err == nil {
			err = n.buyer.SetPaymentKey(key.PubKey().SerializeCompressed())
		}
		if err != nil {
			return res, fmt.Errorf("restore wallet: buyer payment key: %w", err)
		}
	}
	if n.cfg.Payment.PayoutAddress == "" && n.cfg.Payment.PayoutXpub == "" {
		addr, err := w.Address(ctx)
		if err != nil {
			return res, fmt.Errorf("restore wallet: payout address: %w", err)
		}
		n.payments.SetPayoutAddress(addr.EncodeAddress())
		n.payCfg.PayoutAddress = addr.EncodeAddress()
		n.log.Info("seller payouts go to the restored wallet", "address", addr.EncodeAddress())
	}
	spendable, total, err := w.Balance(1)
	if err != nil {
		return res, err
	}
	n.log.Info("wallet restored", "network", cfg.Network, "spendable_sat", int64(spendable), "total_sat", int64(total),
		"previous", prev, "took", time.Since(began).Round(time.Millisecond))
	return api.RestoreResult{Network: cfg.Network, Spendable: int64(spendable), Total: int64(total), Previous: prev}, nil
}

// keyedBySeed says what the wallet's seed still holds that the restored
// seed (restored's keys) would not: channels not closed, escrows not
// settled, contracts and jobs not ended, and closes whose output waits at
// a hold key of the current seed to be swept; "" when nothing. A close
// output waiting at a hold key restored derives too (the node's own seed
// restored over itself) is no obstacle: the sweep goes on with the same
// key.
func (n *Node) keyedBySeed(restored *payment.Keyring) string {
	var open []string
	unswept := false
	for _, c := range n.payments.Channels() {
		if c.State != payment.StateClosed {
			open = append(open, fmt.Sprintf("channel %s (%s, %s)", short(c.ID), c.Role, c.State))
		} else if c.Unswept() && !c.HeldBy(restored) {
			unswept = true
			open = append(open, fmt.Sprintf("channel %s (seller, its close's output waits at the node's hold key %d, not swept to the payout address yet)", short(c.ID), *c.HoldIndex))
		}
	}
	if n.escrow != nil {
		for _, e := range n.escrow.m.Escrows() {
			switch e.State {
			case payment.EscrowReleased, payment.EscrowRefunded, payment.EscrowFailed:
			default:
				open = append(open, fmt.Sprintf("escrow %s (%s)", short(e.ID), e.State))
			}
		}
	}
	for _, m := range []struct {
		role contract.Role
		eng  interface{ Machine() *contract.Machine }
	}{{contract.RoleSeller, sellerEngine(n.seller)}, {contract.RoleBuyer, buyerEngine(n.buyer)}} {
		if m.eng == nil {
			continue
		}
		recs, _ := m.eng.Machine().List(m.role)
		for _, r := range recs {
			if !r.State.Final() {
				open = append(open, fmt.Sprintf("contract %s (%s, %s)", short(r.ID), m.role, r.State))
			}
		}
	}
	if n.buyer != nil {
		// A job still looking for a seller would make a contract keyed by
		// the seed it finds.
		jobs, _ := n.buyer.Jobs()
		for _, j := range jobs {
			switch j.State {
			case contract.JobDone, contract.JobFailed, contract.JobCancelled:
			default:
				open = append(open, fmt.Sprintf("job %s (%s)", short(j.ID), j.State))
			}
		}
	}
	if len(open) == 0 {
		return ""
	}
	const show = 8
	more := ""
	if len(open) > show {
		more = fmt.Sprintf(" and %d more", len(open)-show)
		open = open[:show]
	}
	sweep := ""
	if unswept {
		sweep = " and the sweeps to confirm (`blackbox earnings` shows what is sweeping; payment.sweep_at and payment.sweep_after start one), or restore this node's own seed backup, which keeps its hold keys"
	}
	return fmt.Sprintf("the wallet's seed still keys %s%s: a restore of another seed now would strand them. Let the contracts end (`blackbox jobs`), close the channels (`blackbox channel close ID`; a buyer's channel is refunded after its expiry) and wait for the closes to confirm (`blackbox channels`)%s, then restore; nothing changed",
		strings.Join(open, ", "), more, sweep)
}

func sellerEngine(s *contract.Seller) interface{ Machine() *contract.Machine } {
	if s == nil {
		return nil
	}
	return s
}

func buyerEngine(b *contract.Buyer) interface{ Machine() *contract.Machine } {
	if b == nil {
		return nil
	}
	return b
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// restore replaces the wallet in dir with the one backup restores: it
// waits for run's step, closes the open wallet, moves dir aside, creates
// and opens (rescans) the restored one and swaps the keys to it. On a
// failure the old wallet goes back in place (run reopens it). It returns
// the new wallet and where the old one went.
func (l *liveWallet) restore(ctx context.Context, dir string, backup *payment.SeedBackup) (*payment.Wallet, string, error) {
	l.smu.Lock()
	defer l.smu.Unlock()
	l.wmu.Lock()
	old := l.w
	l.w = nil
	l.wmu.Unlock()
	if old != nil {
		done := make(chan struct{})
		go func() { defer close(done); old.Close() }()
		select {
		case <-done:
		case <-time.After(walletCloseWait):
			l.log.Warn("the old wallet did not close in time: leaving it", "waited", walletCloseWait)
		}
	}
	prev := dir + ".replaced-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(dir, prev); err != nil {
		return nil, "", fmt.Errorf("restore wallet: move the old wallet aside: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, walletRestoreTimeout)
	defer cancel()
	w, err := l.create(cctx, backup)
	if err != nil {
		if rerr := errors.Join(os.RemoveAll(dir), os.Rename(prev, dir)); rerr != nil {
			l.log.Error("restore wallet: put the old wallet back", "dir", dir, "previous", prev, "err", rerr)
		}
		return nil, "", fmt.Errorf("%w: restore wallet: %w (the old wallet is back in place)", api.ErrUnavailable, err)
	}
	l.keys.Replace(w.Keyring())
	l.wmu.Lock()
	l.w = w
	l.wmu.Unlock()
	l.started(w, "")
	return w, prev, nil
}
