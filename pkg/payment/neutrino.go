package payment

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/btcsuite/btcwallet/chain"
	"github.com/btcsuite/btcwallet/walletdb"
	"github.com/lightninglabs/neutrino"
	"github.com/lightninglabs/neutrino/pushtx"
)

// The light client: neutrino (BIP157/158 compact block filters, as lnd's
// light mode) runs inside the daemon with its headers in the data dir. It
// cannot look a transaction up by its id — nobody serves that to a light
// client — so everything is found through a script the transaction pays
// to or spends from: the filters of the blocks from a height hint up say
// which blocks may hold it, and only those blocks are fetched. Scans are
// remembered (up to which block, and which blocks matched) and re-checked
// against the header chain on every call, so a reorg drops what it
// replaced and the next call scans again.
//
// Without a mempool, an unconfirmed transaction is known only when this
// node broadcast it: a counterparty's unconfirmed spend shows once mined.

// Backends of payment.backend.
const (
	BackendNeutrino = "neutrino"
	BackendBtcd     = "btcd"
)

// neutrinoDirName is the light client's directory in the data dir (one
// subdirectory per network).
const neutrinoDirName = "neutrino"

// ScriptChain is a Chain that finds transactions through a script (a light
// client). Callers that know a script use TxConfirmations and SpendOfScript,
// which use it when the chain has it and fall back to Chain's methods.
type ScriptChain interface {
	Chain
	// ConfirmationsOf is Confirmations of txid, found through pkScript:
	// a script one of its outputs pays to or one of its inputs spends,
	// in a block from heightHint up.
	ConfirmationsOf(ctx context.Context, txid chainhash.Hash, pkScript []byte, heightHint int32) (int32, error)
	// SpendOfScript is SpendOf for an output paying to pkScript.
	SpendOfScript(ctx context.Context, op wire.OutPoint, pkScript []byte, heightHint int32) (*wire.MsgTx, error)
}

// TxConfirmations asks chain how deep txid is, through pkScript (a script
// it pays to or spends from) and heightHint when chain is a ScriptChain.
func TxConfirmations(ctx context.Context, chain Chain, txid chainhash.Hash, pkScript []byte, heightHint int32) (int32, error) {
	if sc, ok := chain.(ScriptChain); ok && len(pkScript) > 0 {
		return sc.ConfirmationsOf(ctx, txid, pkScript, heightHint)
	}
	return chain.Confirmations(ctx, txid)
}

// SpendOfScript asks chain for the spend of op, an output paying to
// pkScript, through the script when chain is a ScriptChain.
func SpendOfScript(ctx context.Context, chain Chain, op wire.OutPoint, pkScript []byte, heightHint int32) (*wire.MsgTx, error) {
	if sc, ok := chain.(ScriptChain); ok && len(pkScript) > 0 {
		return sc.SpendOfScript(ctx, op, pkScript, heightHint)
	}
	return chain.SpendOf(ctx, op, heightHint)
}

// NeutrinoChain is the Chain of the embedded light client.
type NeutrinoChain struct {
	cs     *neutrino.ChainService
	db     walletdb.DB
	params *chaincfg.Params
	cfg    Config
	log    *slog.Logger
	fees   *feeSource

	mu sync.Mutex
	// sent are the transactions this node broadcast: the light client's
	// only view of unconfirmed transactions. A confirmed one stays (a
	// reorg may return it to the mempool) until it is buried; the map is
	// kept in sentPath (neutrinosent.go), with the tip each was first
	// sent at (sentAt).
	sent     map[chainhash.Hash]*wire.MsgTx
	sentAt   map[chainhash.Hash]int32
	sentPath string
	// saveMu orders the file's writes; quit stops keepSent, which closes
	// keepDone.
	saveMu    sync.Mutex
	quit      chan struct{}
	keepDone  chan struct{}
	closeOnce sync.Once
	// scans remember filter scans by script and start height.
	scans map[string]*scan
	// feeTip is the tip blockFeeRate last computed feeRate (feeOK) at.
	feeTip  chainhash.Hash
	feeRate int64
	feeOK   bool
	// noPeerSince is when the client was last seen with no peer (zero
	// while it has one).
	noPeerSince time.Time
}

var _ ScriptChain = (*NeutrinoChain)(nil)

// scan is how far the filters of one script were matched, and where.
type scan struct {
	to      int32          // matched through this height
	toHash  chainhash.Hash // the block at `to` when matched
	matches []blockRef     // blocks whose filter matched, ascending
}

type blockRef struct {
	height int32
	hash   chainhash.Hash
}

// NeutrinoDir is where the light client of cfg.Network keeps its headers
// and filters under dataDir.
func NeutrinoDir(dataDir string, cfg Config) string {
	return filepath.Join(dataDir, neutrinoDirName, CanonicalNetwork(cfg.Network))
}

// StartNeutrino opens the light client's database in dir and starts it:
// it connects to payment.peers (only those) or, without any, to the
// network's DNS seeds, and syncs headers and filter headers in the
// background. Stop it with Close.
func StartNeutrino(cfg Config, dir string, log *slog.Logger) (*NeutrinoChain, error) {
	params, err := NetParams(cfg.Network)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Peers) == 0 && len(params.DNSSeeds) == 0 {
		return nil, fmt.Errorf("payment.peers: %s has no DNS seeds; name the nodes to sync from (host:port)", cfg.Network)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("neutrino dir: %w", err)
	}
	db, err := walletdb.Create("bdb", filepath.Join(dir, "neutrino.db"), true, 10*time.Second, false)
	if err != nil {
		return nil, fmt.Errorf("open neutrino database in %s: %w", dir, err)
	}
	cs, err := neutrino.NewChainService(neutrino.Config{
		DataDir:      dir,
		Database:     db,
		ChainParams:  *params,
		ConnectPeers: cfg.Peers,
		// Small caches: a node scans few scripts, and the idle daemon
		// stays under its memory goal.
		FilterCacheSize: 2 << 20,
		BlockCacheSize:  8 << 20,
		PersistToDisk:   false,
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("neutrino: %w", err)
	}
	if err := cs.Start(); err != nil {
		_ = cs.Stop()
		_ = db.Close()
		return nil, fmt.Errorf("start neutrino: %w", err)
	}
	n := &NeutrinoChain{cs: cs, db: db, params: params, cfg: cfg, log: log,
		sent: map[chainhash.Hash]*wire.MsgTx{}, sentAt: map[chainhash.Hash]int32{}, scans: map[string]*scan{},
		quit: make(chan struct{}), keepDone: make(chan struct{})}
	n.fees = newFeeSource(cfg, n.blockFeeRate)
	n.loadSent(dir)
	go n.keepSent(len(n.sent) > 0)
	return n, nil
}

// ChainService is the running light client (the wallet syncs through it).
func (n *NeutrinoChain) ChainService() *neutrino.ChainService { return n.cs }

// Close stops the light client and closes its database.
func (n *NeutrinoChain) Close() {
	n.closeOnce.Do(func() {
		close(n.quit)
		<-n.keepDone
		_ = n.cs.Stop()
		_ = n.db.Close()
	})
}

// stableFor is how long the light client's tip must stay put, with a
// peer connected and the filter headers at the block headers' tip, for a
// chain whose newest block is over a day old (a quiet test network, which
// neutrino never calls current) to count as synced. Not on mainnet.
const stableFor = 3 * time.Second

// WaitSynced waits until the light client has a peer and has caught up
// with it: neutrino says it is current (headers and filter headers at the
// peers' tip, the tip less than a day old), or its tip has stayed put for
// stableFor with the filter headers at the block headers' tip.
func (n *NeutrinoChain) WaitSynced(ctx context.Context) error {
	var last int32 = -1
	var since time.Time
	for {
		if n.cs.ConnectedCount() > 0 {
			bb, err := n.cs.BestBlock()
			_, top, terr := n.cs.BlockHeaders.ChainTip()
			if err == nil && terr == nil && bb.Height >= int32(top) {
				if n.cs.IsCurrent() {
					return nil
				}
				// Not on mainnet, whose blocks are never a day old, and
				// not before the first headers came.
				if bb.Height != last {
					last, since = bb.Height, time.Now()
				} else if bb.Height > 0 && n.params.Net != chaincfg.MainNetParams.Net && time.Since(since) >= stableFor {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("light client sync (%d peers): %w", n.cs.ConnectedCount(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Broadcast implements Chain: the transaction is sent to the peers (and
// rebroadcast by neutrino on every new block until it confirms) and
// remembered as this node's.
func (n *NeutrinoChain) Broadcast(ctx context.Context, tx *wire.MsgTx) error {
	txid := tx.TxHash()
	err := n.cs.SendTransaction(tx)
	if err != nil && !pushtx.IsBroadcastError(err, pushtx.Mempool, pushtx.Confirmed) {
		return fmt.Errorf("broadcast %s: %w", txid, err)
	}
	n.addSent(tx)
	return nil
}

// noPeerGrace is how long the light client may be without a peer (a
// reconnect, a peer's restart) before its chain source counts as down.
const noPeerGrace = 15 * time.Second

// peerless reports whether the light client has had no peer connected for
// noPeerGrace.
func (n *NeutrinoChain) peerless() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cs.ConnectedCount() > 0 {
		n.noPeerSince = time.Time{}
		return false
	}
	if n.noPeerSince.IsZero() {
		n.noPeerSince = time.Now()
	}
	return time.Since(n.noPeerSince) >= noPeerGrace
}

// Tip implements Chain: the best block whose header and filter header the
// client has. With no peer connected for noPeerGrace the client hears of
// no block, spend or broadcast: the chain source is down, as a btcd that
// does not answer.
func (n *NeutrinoChain) Tip(ctx context.Context) (int32, error) {
	if n.peerless() {
		from := "the network's DNS seeds"
		if len(n.cfg.Peers) > 0 {
			from = "payment.peers " + strings.Join(n.cfg.Peers, ", ")
		}
		return 0, fmt.Errorf("%w: the light client has no Bitcoin peer connected (it keeps trying %s)", ErrChainUnreachable, from)
	}
	bb, err := n.cs.BestBlock()
	if err != nil {
		return 0, fmt.Errorf("light client tip: %w", err)
	}
	return bb.Height, nil
}

// FeeRate implements Chain from the fee source (payment.fee_url, else the
// recent blocks); ok is false when neither has a rate.
func (n *NeutrinoChain) FeeRate(ctx context.Context, target int) (int64, bool, error) {
	r, _, ok := n.fees.rate(ctx, target)
	return r, ok, nil
}

// FeeRateFrom implements FeeReporter.
func (n *NeutrinoChain) FeeRateFrom(ctx context.Context, target int) (int64, string, bool) {
	return n.fees.rate(ctx, target)
}

// Confirmations implements Chain for the transactions this node broadcast
// (their own outputs are the scripts to look for); any other txid is
// unknown to a light client (-1): callers that know a script use
// TxConfirmations.
func (n *NeutrinoChain) Confirmations(ctx context.Context, txid chainhash.Hash) (int32, error) {
	n.mu.Lock()
	tx := n.sent[txid]
	n.mu.Unlock()
	if tx == nil || len(tx.TxOut) == 0 {
		return -1, nil
	}
	tip, err := n.Tip(ctx)
	if err != nil {
		return 0, err
	}
	// A transaction sent by this process was sent above the tip of a
	// week ago at the earliest (channels live a week).
	return n.ConfirmationsOf(ctx, txid, tx.TxOut[0].PkScript, tip-1008)
}

// ConfirmationsOf implements ScriptChain.
func (n *NeutrinoChain) ConfirmationsOf(ctx context.Context, txid chainhash.Hash, pkScript []byte, heightHint int32) (int32, error) {
	tip, matches, err := n.match(ctx, pkScript, heightHint)
	if err != nil {
		return 0, err
	}
	for _, m := range matches {
		blk, err := n.block(ctx, m.hash)
		if err != nil {
			return 0, err
		}
		for _, tx := range blk.Transactions {
			if tx.TxHash() == txid {
				return tip - m.height + 1, nil
			}
		}
	}
	n.mu.Lock()
	_, ours := n.sent[txid]
	n.mu.Unlock()
	if ours {
		return 0, nil
	}
	return -1, nil
}

// SpendOf implements Chain: without the output's script a light client
// can only look among the transactions it broadcast.
func (n *NeutrinoChain) SpendOf(ctx context.Context, op wire.OutPoint, heightHint int32) (*wire.MsgTx, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, tx := range n.sent {
		if spends(tx, op) {
			return tx.Copy(), nil
		}
	}
	return nil, nil
}

// SpendOfScript implements ScriptChain: the blocks whose filters match
// pkScript (a spend's filter holds the script it spends) from heightHint
// up, then this node's own unconfirmed transactions.
func (n *NeutrinoChain) SpendOfScript(ctx context.Context, op wire.OutPoint, pkScript []byte, heightHint int32) (*wire.MsgTx, error) {
	_, matches, err := n.match(ctx, pkScript, heightHint)
	if err != nil {
		return nil, err
	}
	for _, m := range matches {
		blk, err := n.block(ctx, m.hash)
		if err != nil {
			return nil, err
		}
		for _, tx := range blk.Transactions {
			if spends(tx, op) {
				return tx, nil
			}
		}
	}
	return n.SpendOf(ctx, op, heightHint)
}

// match returns the tip and the blocks from heightHint to the tip whose
// filters match pkScript, scanning only what the last call did not, after
// checking that what it saw is still the best chain.
func (n *NeutrinoChain) match(ctx context.Context, pkScript []byte, heightHint int32) (int32, []blockRef, error) {
	tip, err := n.Tip(ctx)
	if err != nil {
		return 0, nil, err
	}
	if heightHint < 1 {
		heightHint = 1
	}
	key := hex.EncodeToString(pkScript) + fmt.Sprintf("@%d", heightHint)
	n.mu.Lock()
	s := n.scans[key]
	n.mu.Unlock()
	if s != nil && !n.stillBest(s) {
		n.log.Info("light client: blocks of a scan left the best chain (reorg); scanning again", "from", heightHint)
		s = nil
	}
	if s == nil {
		s = &scan{to: heightHint - 1}
	} else {
		s = &scan{to: s.to, toHash: s.toHash, matches: append([]blockRef(nil), s.matches...)}
	}
	for h := s.to + 1; h <= tip; h++ {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		hash, ok, err := n.filterMatches(h, [][]byte{pkScript})
		if err != nil {
			return 0, nil, err
		}
		if ok {
			s.matches = append(s.matches, blockRef{height: h, hash: hash})
		}
		s.to, s.toHash = h, hash
	}
	n.mu.Lock()
	n.scans[key] = s
	n.mu.Unlock()
	return tip, s.matches, nil
}

// filterMatches reports whether the BIP 158 filter of block h of the best
// chain (fetched as opts say) matches any of scripts, with the block's hash.
func (n *NeutrinoChain) filterMatches(h int32, scripts [][]byte, opts ...neutrino.QueryOption) (chainhash.Hash, bool, error) {
	hash, err := n.cs.GetBlockHash(int64(h))
	if err != nil {
		return chainhash.Hash{}, false, fmt.Errorf("block hash %d: %w", h, err)
	}
	f, err := n.cs.GetCFilter(*hash, wire.GCSFilterRegular, opts...)
	if err != nil {
		return *hash, false, fmt.Errorf("filter of block %d: %w", h, err)
	}
	if f == nil || f.N() == 0 {
		return *hash, false, nil
	}
	ok, err := f.MatchAny(builder.DeriveKey(hash), scripts)
	if err != nil {
		return *hash, false, fmt.Errorf("match filter of block %d: %w", h, err)
	}
	return *hash, ok, nil
}

// stillBest reports whether the blocks a scan saw are still in the best
// header chain.
func (n *NeutrinoChain) stillBest(s *scan) bool {
	check := func(h int32, want chainhash.Hash) bool {
		got, err := n.cs.GetBlockHash(int64(h))
		return err == nil && *got == want
	}
	if s.toHash != (chainhash.Hash{}) && !check(s.to, s.toHash) {
		return false
	}
	for _, m := range s.matches {
		if !check(m.height, m.hash) {
			return false
		}
	}
	return true
}

// block fetches a block (neutrino checks it against its filter and keeps
// recent ones in its cache).
func (n *NeutrinoChain) block(ctx context.Context, hash chainhash.Hash) (*wire.MsgBlock, error) {
	b, err := await(ctx, func() (*wire.MsgBlock, error) {
		blk, err := n.cs.GetBlock(hash)
		if err != nil {
			return nil, err
		}
		return blk.MsgBlock(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetch block %s: %w", hash, err)
	}
	return b, nil
}

// Info implements the health check's chain source: the network by the
// header store's genesis block, the tip, the peers. A light client has no
// peer clock offsets to report.
func (n *NeutrinoChain) Info(ctx context.Context) (ChainInfo, error) {
	g, err := n.cs.GetBlockHash(0)
	if err != nil {
		return ChainInfo{}, fmt.Errorf("genesis block: %w", err)
	}
	bb, err := n.cs.BestBlock()
	if err != nil {
		return ChainInfo{}, fmt.Errorf("best block: %w", err)
	}
	return ChainInfo{Network: NetworkOfGenesis(g.String()), Height: bb.Height, TipTime: bb.Timestamp,
		Peers: n.cs.ConnectedCount()}, nil
}

// PeersDial checks that at least one of payment.peers accepts a TCP
// connection (doctor's quick answer).
func (c *Config) PeersDial(ctx context.Context, timeout time.Duration) error {
	if len(c.Peers) == 0 {
		return nil
	}
	var errs []error
	for _, p := range c.Peers {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", p)
		if err == nil {
			return conn.Close()
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %v", ErrChainUnreachable, errors.Join(errs...))
}

// WithLightClient is cfg with the running light client the wallet syncs
// through (backend neutrino): one client serves the Chain and the wallet.
func (c Config) WithLightClient(n *NeutrinoChain) Config {
	c.light = n
	return c
}

// checkChainSource names what the wallet's chain source lacks.
func (c *Config) checkChainSource() error {
	if c.Backend == BackendNeutrino {
		if c.light == nil {
			return errors.New("payment.backend is neutrino, but no light client is running (start it with StartNeutrino and Config.WithLightClient)")
		}
		return nil
	}
	return c.checkRPC()
}

// walletChainClient is btcwallet's chain client: neutrino's when the
// backend is the light client, else btcd's websocket RPC, started.
func walletChainClient(cfg Config, params *chaincfg.Params) (chain.Interface, error) {
	if cfg.Backend == BackendNeutrino {
		nc := chain.NewNeutrinoClient(params, cfg.light.cs)
		if err := nc.Start(); err != nil {
			return nil, fmt.Errorf("btcwallet light client: %w", err)
		}
		return nc, nil
	}
	var certs []byte
	if !cfg.RPCNoTLS && cfg.RPCCert != "" {
		var err error
		if certs, err = os.ReadFile(cfg.RPCCert); err != nil {
			return nil, fmt.Errorf("read btcd rpc cert: %w", err)
		}
	}
	rpc, err := chain.NewRPCClient(params, cfg.RPCHost, cfg.RPCUser, cfg.RPCPass, certs, cfg.RPCNoTLS, 3)
	if err != nil {
		return nil, fmt.Errorf("btcwallet chain client: %w", err)
	}
	if err := rpc.Start(); err != nil {
		return nil, fmt.Errorf("connect btcwallet to btcd %s: %w", cfg.RPCHost, err)
	}
	return rpc, nil
}

// remember records a transaction this node published (through the wallet)
// as the light client's own: known while unconfirmed. nil n does nothing.
func (n *NeutrinoChain) remember(tx *wire.MsgTx) {
	if n == nil {
		return
	}
	n.addSent(tx)
}

// fundingScript is the script of a channel's funding output (nil when the
// record does not give it: the chain is then asked by txid).
func fundingScript(c *Channel) []byte {
	pk, err := c.PkScript()
	if err != nil {
		return nil
	}
	return pk
}

// escrowScript is the script of an escrow's funding output, from the
// funding transaction it keeps.
func escrowScript(e *EscrowRecord, op wire.OutPoint) []byte {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(e.FundingTx)); err != nil || int(op.Index) >= len(tx.TxOut) {
		return nil
	}
	return tx.TxOut[op.Index].PkScript
}

// RegtestConfig is DefaultConfig on regtest through btcd's RPC: what the
// tests (and the default before the light client) start from.
func RegtestConfig() Config {
	c := DefaultConfig()
	c.Network, c.Backend = "regtest", BackendBtcd
	return c
}

// ChainSource is a running chain backend: the Chain, what health checks
// ask it, and how to stop it.
type ChainSource interface {
	Chain
	Info(ctx context.Context) (ChainInfo, error)
	Close()
}

var (
	_ ChainSource = (*BtcdChain)(nil)
	_ ChainSource = (*NeutrinoChain)(nil)
)

// OpenChain starts cfg's backend: btcd's RPC client, or the light client
// with its headers under dataDir (NeutrinoDir). The Config it returns is
// cfg with the light client set, for OpenWallet and CreateWallet.
func OpenChain(cfg Config, dataDir string, log *slog.Logger) (ChainSource, Config, error) {
	if cfg.Backend == BackendNeutrino {
		n, err := StartNeutrino(cfg, NeutrinoDir(dataDir, cfg), log)
		if err != nil {
			return nil, cfg, err
		}
		return n, cfg.WithLightClient(n), nil
	}
	b, err := DialBtcd(cfg, log)
	if err != nil {
		return nil, cfg, err
	}
	return b, cfg, nil
}

// LightClient is the light client WithLightClient set, or nil.
func (c Config) LightClient() *NeutrinoChain { return c.light }

// CloseAlso makes Close stop f after the wallet (a chain source the
// wallet's opener started for it alone).
func (w *Wallet) CloseAlso(f func()) { w.closeAlso = append(w.closeAlso, f) }
