package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The chain source comes and goes: btcd restarts, the light client loses
// its peers, a node boots before its chain source. The node does not give
// up its payments for it. liveWallet keeps asking the chain source (with a
// backoff) until it answers, opens the wallet then, watches that the wallet
// keeps up with the chain's tip and reopens it when it does not; meanwhile
// the node says why it does not sell or fund (status, `submit`, the API)
// and stops offering (a seller cannot check a funding it cannot see).
// Everything here works through payment.Chain and payment.OpenWallet, so it
// is the same for every chain backend.

const (
	// chainRetryMin and chainRetryMax bound the backoff between tries
	// while the chain source does not answer (doubling from the first).
	chainRetryMin = time.Second
	chainRetryMax = time.Minute
	// chainPoll is how often a connected chain source is asked its tip.
	chainPoll = 2 * time.Second
	// chainProbeTimeout bounds one question to the chain source.
	chainProbeTimeout = 10 * time.Second
	// walletSyncGrace is how long the wallet may be behind the tip (a
	// block just found) before status says syncing and funding waits.
	walletSyncGrace = 5 * time.Second
	// walletLagMax is how long the wallet may stay behind a chain source
	// that answers before it is closed and opened again (a fresh
	// connection and a rescan from its last synced block), rather than
	// waiting for btcwallet's own reconnect, which backs off up to a
	// minute, or for a sync that stopped.
	walletLagMax = 30 * time.Second
	// walletOpenTimeout bounds one opening of the wallet (its first sync).
	walletOpenTimeout = 2 * time.Minute
)

// liveWallet is the node's wallet as it comes and goes with the chain
// source: the payment Funder and what the API asks of the wallet. Its
// keyring is there from the start (it comes from the seed alone); the rest
// answers ErrChainDown or ErrNotSynced, with the reason, until the wallet
// is open and at the chain's tip.
type liveWallet struct {
	backend string
	chain   payment.Chain
	// tipOf, if set, asks the chain's tip in chain's stead (the node's
	// sharedTip).
	tipOf func(ctx context.Context) (int32, error)
	keys  *payment.Keyring
	// open opens the wallet (payment.OpenWallet with the node's
	// settings); it may take until ctx ends.
	open func(ctx context.Context) (*payment.Wallet, error)
	// why, if set, says in a sentence why the chain source does not
	// answer (the payments health check's detail), or "".
	why func(ctx context.Context) string
	// onChange is called (from run's goroutine) when the chain source
	// becomes usable for selling or stops being so.
	onChange func()
	// afterOpen, if set, is called with every wallet run opens.
	afterOpen func(ctx context.Context, w *payment.Wallet)
	log       *slog.Logger
	now       func() time.Time

	// create writes a wallet restored from backup in the wallet's place
	// and opens it (payment.CreateWallet with the node's settings).
	create func(ctx context.Context, backup *payment.SeedBackup) (*payment.Wallet, error)
	// smu is held by each step of run and by a restore, so that run never
	// opens (or creates) a wallet while a restore swaps it.
	smu sync.Mutex

	mu      sync.Mutex
	st      api.ChainSource
	backoff time.Duration
	// behindSince is when the wallet fell behind target, the tip it was
	// then to reach (zero: it is not behind).
	behindSince time.Time
	target      int32

	// wmu guards w: a call on the wallet holds it read, closing it to
	// reopen holds it written, so no call sees a closed wallet.
	wmu sync.RWMutex
	w   *payment.Wallet
}

var _ payment.Funder = (*liveWallet)(nil)

func newLiveWallet(backend string, chain payment.Chain, keys *payment.Keyring, log *slog.Logger) *liveWallet {
	return &liveWallet{backend: backend, chain: chain, keys: keys, log: log, now: time.Now,
		st: api.ChainSource{Backend: backend, State: api.ChainConnecting, Since: time.Now()}}
}

// started records the outcome of the node's first try at start: the
// wallet it opened (the chain source answered), or why it could not.
func (l *liveWallet) started(w *payment.Wallet, why string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if w != nil {
		l.w = w
		h, _ := w.SyncedTo()
		l.st = api.ChainSource{Backend: l.backend, State: api.ChainConnected, Since: now, Height: h, WalletHeight: h}
		return
	}
	l.st = api.ChainSource{Backend: l.backend, State: api.ChainConnecting, Since: now, Error: why, NextRetry: now}
}

// Keyring is the channel keys (from the seed: always there).
func (l *liveWallet) Keyring() *payment.Keyring { return l.keys }

// status is the chain source's state for `status`.
func (l *liveWallet) status() api.ChainSource {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// chainUp reports whether the chain source answers: a seller can check
// fundings and close, so it offers.
func (l *liveWallet) chainUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.State != api.ChainConnecting
}

// notUp says why the chain source cannot be used: ErrChainDown with the
// last error and the next try.
func (l *liveWallet) notUp() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.downErr()
}

// downErr is notUp with l.mu held.
func (l *liveWallet) downErr() error {
	msg := l.st.Error
	if msg == "" {
		msg = "not connected yet"
	}
	if !l.st.NextRetry.IsZero() {
		msg += fmt.Sprintf(" (%s: %s)", l.backend, nextTry(l.st.NextRetry.Sub(l.now())))
	}
	msg += "; `blackbox doctor` checks it"
	return fmt.Errorf("%w: %s", payment.ErrChainDown, msg)
}

// canFund says whether the wallet can fund now: nil when it is open and
// at the chain's tip; else ErrChainDown or ErrNotSynced with the reason.
func (l *liveWallet) canFund() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.st.State {
	case api.ChainConnecting:
		return l.downErr()
	case api.ChainSyncing:
		if l.st.WalletHeight == 0 && l.st.Error != "" {
			return fmt.Errorf("%w: %s (%s)", payment.ErrNotSynced, l.st.Error, nextTry(l.st.NextRetry.Sub(l.now())))
		}
		if l.st.WalletHeight == 0 {
			return fmt.Errorf("%w: the wallet is opening (chain source at %d)", payment.ErrNotSynced, l.st.Height)
		}
		return fmt.Errorf("%w: the wallet is at block %d, its chain source at %d: it catches up (`blackbox status` shows it)", payment.ErrNotSynced, l.st.WalletHeight, l.st.Height)
	}
	return nil
}

// with runs f on the open wallet, or says why there is none.
func (l *liveWallet) with(f func(w *payment.Wallet) error) error {
	l.wmu.RLock()
	defer l.wmu.RUnlock()
	if l.w == nil {
		if err := l.canFund(); err != nil {
			return err
		}
		return fmt.Errorf("%w: the wallet is reopening", payment.ErrNotSynced)
	}
	return f(l.w)
}

// Address is a fresh receive address of the wallet: the chain source is
// told to watch it, so none is made while it is down.
func (l *liveWallet) Address(ctx context.Context) (btcutil.Address, error) {
	if !l.chainUp() {
		return nil, fmt.Errorf("new address: %w", l.notUp())
	}
	var a btcutil.Address
	err := l.with(func(w *payment.Wallet) (err error) {
		a, err = w.Address(ctx)
		return err
	})
	return a, err
}

// Balance is the wallet's balance (see payment.Wallet.Balance).
func (l *liveWallet) Balance(minConf int32) (spendable, total btcutil.Amount, err error) {
	err = l.with(func(w *payment.Wallet) (err error) {
		spendable, total, err = w.Balance(minConf)
		return err
	})
	return spendable, total, err
}

// NewScript implements payment.Funder.
func (l *liveWallet) NewScript(ctx context.Context) ([]byte, error) {
	a, err := l.Address(ctx)
	if err != nil {
		return nil, err
	}
	return txscript.PayToAddrScript(a)
}

// FundTx implements payment.Funder: refused at once with the reason while
// the chain source is down or the wallet behind it (its coins may be
// spent, or new ones not seen yet).
func (l *liveWallet) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	if err := l.canFund(); err != nil {
		return nil, fmt.Errorf("fund: %w", err)
	}
	var tx *wire.MsgTx
	err := l.with(func(w *payment.Wallet) (err error) {
		tx, err = w.FundTx(ctx, outs, feeRate)
		return err
	})
	return tx, err
}

// PublishTx implements payment.Funder.
func (l *liveWallet) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	return l.with(func(w *payment.Wallet) error { return w.PublishTx(ctx, tx) })
}

// Send pays amount to addr (see payment.Wallet.Send).
func (l *liveWallet) Send(ctx context.Context, addr string, amount, feeRate int64) (*wire.MsgTx, error) {
	if err := l.canFund(); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	var tx *wire.MsgTx
	err := l.with(func(w *payment.Wallet) (err error) {
		tx, err = w.Send(ctx, l.chain, addr, amount, feeRate)
		return err
	})
	return tx, err
}

// SignOutput implements payment.OutputSigner (the seller's CPFP child of
// a close): it needs the open wallet, not its chain source.
func (l *liveWallet) SignOutput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	var wit wire.TxWitness
	err := l.with(func(w *payment.Wallet) (err error) {
		wit, err = w.SignOutput(tx, idx, pkScript, amount, prevs)
		return err
	})
	return wit, err
}

// walletCloseWait bounds how long the node's shutdown waits for the
// wallet to close: btcwallet's chain client sleeps between reconnects (up
// to a minute) while its chain source is down, and its close waits for
// that sleep. Its database is crash-safe; the process is ending.
const walletCloseWait = 5 * time.Second

// close closes the wallet (the node's cleanup).
func (l *liveWallet) close() error {
	l.wmu.Lock()
	w := l.w
	l.w = nil
	l.wmu.Unlock()
	if w == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { defer close(done); w.Close() }()
	select {
	case <-done:
	case <-time.After(walletCloseWait):
		l.log.Warn("the wallet did not close in time (its chain client waits to reconnect): leaving it", "waited", walletCloseWait)
	}
	return nil
}

// run keeps the wallet connected until ctx ends: one step, then the pause
// the step asks for.
func (l *liveWallet) run(ctx context.Context) {
	for {
		l.smu.Lock()
		wait := l.step(ctx)
		l.smu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// step asks the chain source its tip; opens the wallet when it is not
// open; compares the wallet's synced height with the tip and reopens a
// wallet that stayed behind too long. It returns when to step again.
func (l *liveWallet) step(ctx context.Context) time.Duration {
	pctx, cancel := context.WithTimeout(ctx, chainProbeTimeout)
	ask := l.chain.Tip
	if l.tipOf != nil {
		ask = l.tipOf
	}
	tip, err := ask(pctx)
	cancel()
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		why := err.Error()
		if l.why != nil {
			if w := l.why(ctx); w != "" {
				why = w
			}
		}
		return l.failed(why, false)
	}
	l.wmu.RLock()
	w := l.w
	l.wmu.RUnlock()
	if w == nil {
		l.set(func(st *api.ChainSource) {
			st.State, st.Height, st.WalletHeight, st.Error, st.NextRetry = api.ChainSyncing, tip, 0, "", time.Time{}
		})
		began := l.now()
		if w, err = l.openWallet(ctx); err != nil {
			if ctx.Err() != nil {
				return 0
			}
			return l.failed(fmt.Sprintf("open the wallet: %v", err), true)
		}
		l.wmu.Lock()
		l.w = w
		l.wmu.Unlock()
		l.log.Info("wallet open: the chain source answers", "backend", l.backend, "tip", tip, "took", l.now().Sub(began).Round(time.Millisecond))
	}
	if l.track(tip, w) {
		l.reopen(ctx, w)
		return 0
	}
	return chainPoll
}

// track records tip and the wallet's height and sets the state from them;
// it reports whether the wallet has been behind for walletLagMax.
func (l *liveWallet) track(tip int32, w *payment.Wallet) (reopen bool) {
	height, synced := w.SyncedTo()
	// A chain client that lost its connection has stopped hearing of
	// blocks and spends: the wallet syncs again from its reconnect on.
	disconnected := w.ChainClientDown()
	behind := height < tip || !synced || disconnected
	now := l.now()
	l.mu.Lock()
	if !l.behindSince.IsZero() && height >= l.target && synced && !disconnected {
		l.behindSince = time.Time{} // caught up with what it was behind
	}
	if behind && l.behindSince.IsZero() {
		l.behindSince, l.target = now, tip
	}
	lag := time.Duration(0)
	if !l.behindSince.IsZero() {
		lag = now.Sub(l.behindSince)
	}
	l.backoff = 0
	l.mu.Unlock()
	state := api.ChainConnected
	if lag > walletSyncGrace || disconnected {
		state = api.ChainSyncing
	}
	l.set(func(st *api.ChainSource) {
		st.State, st.Height, st.WalletHeight, st.Error, st.NextRetry = state, tip, height, "", time.Time{}
	})
	return lag > walletLagMax
}

// reopen closes a wallet that stayed behind its chain source and lets the
// next step open it again: a new connection, and a rescan from its last
// synced block.
func (l *liveWallet) reopen(ctx context.Context, w *payment.Wallet) {
	height, _ := w.SyncedTo()
	l.log.Warn("the wallet stays behind its chain source: reopening it", "backend", l.backend, "wallet_height", height, "behind_for", walletLagMax)
	l.wmu.Lock()
	if l.w == w {
		l.w = nil
	}
	l.wmu.Unlock()
	began := l.now()
	w.Close()
	l.log.Info("wallet closed to reopen", "backend", l.backend, "took", l.now().Sub(began).Round(time.Millisecond))
	l.mu.Lock()
	l.behindSince = time.Time{}
	l.st.Reconnects++
	l.mu.Unlock()
}

// openWallet runs open, giving up when ctx ends (then the wallet it still
// opens is closed in the background).
func (l *liveWallet) openWallet(ctx context.Context) (*payment.Wallet, error) {
	octx, cancel := context.WithTimeout(ctx, walletOpenTimeout)
	defer cancel()
	type result struct {
		w   *payment.Wallet
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := l.open(octx)
		done <- result{w, err}
	}()
	select {
	case r := <-done:
		if r.err == nil && l.afterOpen != nil {
			l.afterOpen(ctx, r.w)
		}
		return r.w, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.w != nil {
				r.w.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// failed records that the chain source did not answer (or, chainOK, that
// it did and the wallet did not open: the node still sells, a seller needs
// no wallet) and returns the backoff before the next try.
func (l *liveWallet) failed(why string, chainOK bool) time.Duration {
	l.mu.Lock()
	// Doubles from chainRetryMin with every failure in a row; track
	// resets it once the chain source answers and the wallet is open.
	l.backoff = min(max(chainRetryMin, 2*l.backoff), chainRetryMax)
	wait := l.backoff
	l.mu.Unlock()
	next := l.now().Add(wait)
	state := api.ChainConnecting
	if chainOK {
		state = api.ChainSyncing
	}
	l.set(func(st *api.ChainSource) { st.State, st.Error, st.NextRetry = state, why, next })
	return wait
}

// set changes the state under l.mu, logs a change of State and calls
// onChange when the chain source became usable for selling or stopped
// being so.
func (l *liveWallet) set(f func(st *api.ChainSource)) {
	l.mu.Lock()
	before := l.st
	f(&l.st)
	changed := l.st.State != before.State
	if changed {
		l.st.Since = l.now()
	}
	after := l.st
	l.mu.Unlock()
	if !changed {
		return
	}
	switch after.State {
	case api.ChainConnecting:
		l.log.Warn("chain source down: not selling or funding until it answers", "backend", l.backend, "err", after.Error, "next_try", after.NextRetry.Sub(l.now()).Round(time.Second))
	default:
		l.log.Info("chain source "+after.State, "backend", l.backend, "height", after.Height, "wallet_height", after.WalletHeight)
	}
	if (before.State == api.ChainConnecting) != (after.State == api.ChainConnecting) && l.onChange != nil {
		l.onChange()
	}
}

// nextTry says when the node asks the chain source again.
func nextTry(in time.Duration) string {
	if in < time.Second {
		return "trying again now"
	}
	return "next try in " + in.Round(time.Second).String()
}

// check is the health report's wallet check: open (and where), or
// waiting for its chain source, or catching up with it.
func (l *liveWallet) check(dir string) health.Check {
	c := health.Check{Name: health.NameWallet, Status: health.OK, Detail: "open in the running node (" + dir + ")"}
	if err := l.canFund(); err != nil {
		c.Status, c.Detail = health.Warn, err.Error()
		c.Fix = "the node opens and syncs it by itself once its chain source answers (see payments)"
	}
	return c
}

// chainDownReason is the payments health check's sentence when the chain
// source fails it, or "" (the same words at start, in status and doctor).
func (n *Node) chainDownReason(ctx context.Context, chain health.ChainSource) string {
	for _, c := range health.Chain(ctx, n.cfg.Payment, chain, time.Now()) {
		if c.Name == health.NamePayments && c.Status == health.Fail {
			return c.Detail
		}
	}
	return ""
}

// selling reports whether the node sells now: it has a seller engine and
// its chain source answers.
func (n *Node) selling() bool {
	return n.seller != nil && (n.wallet == nil || n.wallet.chainUp()) && !n.restoring.Load()
}

// notSelling is why the node does not sell now.
func (n *Node) notSelling() []string {
	why := n.noSell
	if n.seller != nil && n.restoring.Load() {
		why = append(why[:len(why):len(why)], errRestoring.Error())
	} else if n.seller != nil && !n.selling() {
		why = append(why[:len(why):len(why)], n.wallet.notUp().Error())
	}
	return why
}

// buying reports whether the node can buy now; notBuying says why not.
func (n *Node) buying() bool {
	return n.buyer != nil && (n.wallet == nil || n.wallet.canFund() == nil) && !n.restoring.Load()
}

func (n *Node) notBuying() string {
	if n.buyer != nil && n.restoring.Load() {
		return errRestoring.Error()
	}
	if n.buyer != nil && n.wallet != nil {
		if err := n.wallet.canFund(); err != nil {
			return err.Error()
		}
	}
	return n.noBuy
}

// chainStatus is status's chain source, nil when payments are off.
func (n *Node) chainStatus() *api.ChainSource {
	if n.wallet == nil {
		return nil
	}
	s := n.wallet.status()
	return &s
}

// reoffer signs the offer again from the meter's spare capacity, which
// OnChange withholds while the node cannot sell.
func (n *Node) reoffer() {
	if n.meter == nil || n.meter.OnChange == nil {
		return
	}
	spare, _ := n.meter.Spare(time.Now())
	n.meter.OnChange(spare)
}

// fundingBlocked is why a job cannot be paid at all now: the wallet
// cannot fund and the buyer has no open channel to pay through; else nil.
func (n *Node) fundingBlocked() error {
	if n.payments == nil || n.wallet == nil {
		return nil
	}
	if n.restoring.Load() {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, errRestoring)
	}
	err := n.wallet.canFund()
	if err == nil {
		return nil
	}
	for _, c := range n.payments.Channels() {
		if c.Role == payment.RoleBuyer && c.State == payment.StateOpen {
			return nil
		}
	}
	return fundingError(err)
}

// fundingError puts a funding error in the API's categories: the user's to
// fix (insufficient funds, fee bounds) is refused with its message, the
// chain source's state is unavailable.
func fundingError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, payment.ErrInsufficientFunds), errors.Is(err, payment.ErrFeeBound):
		return fmt.Errorf("%w: %w", api.ErrRefused, err)
	case errors.Is(err, payment.ErrChainDown), errors.Is(err, payment.ErrNotSynced):
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

// WalletSend implements api.WalletSender: the running node's wallet pays.
func (n *Node) WalletSend(ctx context.Context, req api.SendRequest) (string, error) {
	if err := n.needPayments(); err != nil {
		return "", err
	}
	params, err := payment.NetParams(n.cfg.Payment.Network)
	if err != nil {
		return "", err
	}
	if a, err := btcutil.DecodeAddress(req.Address, params); err != nil || !a.IsForNet(params) {
		return "", fmt.Errorf("%w: %q is not an address on %s", api.ErrBadRequest, req.Address, n.cfg.Payment.Network)
	}
	tx, err := n.wallet.Send(ctx, req.Address, req.AmountSat, req.FeeRate)
	if err != nil {
		if strings.Contains(err.Error(), "below dust") {
			return "", fmt.Errorf("%w: %w", api.ErrBadRequest, err)
		}
		return "", fundingError(err)
	}
	n.log.Info("wallet send", "txid", tx.TxHash(), "amount_sat", req.AmountSat, "to", req.Address)
	return tx.TxHash().String(), nil
}

var _ api.WalletSender = (*Node)(nil)
