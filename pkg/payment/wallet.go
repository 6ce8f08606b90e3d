package payment

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/btcsuite/btcwallet/chain"
	"github.com/btcsuite/btcwallet/snacl"
	"github.com/btcsuite/btcwallet/waddrmgr"
	"github.com/btcsuite/btcwallet/wallet"
	"github.com/btcsuite/btcwallet/wallet/txauthor"
	"github.com/btcsuite/btcwallet/walletdb"
	_ "github.com/btcsuite/btcwallet/walletdb/bdb" // btcwallet's bbolt driver
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// The buyer's hot wallet is btcwallet (as in lnd): it owns UTXO tracking,
// coin selection, signing and rescans, synchronised with btcd over its
// websocket notifications. What this file adds is the seed: generated here,
// kept encrypted (scrypt + NaCl secretbox) in seed.json next to btcwallet's
// database, and the single thing to back up — it restores both the wallet's
// BIP84 addresses and the channel keys (Keyring).

const (
	seedFile      = "seed.json"
	walletDirName = "btcwallet"
	pubPassphrase = "public" // btcwallet's public (watch-only) passphrase, as lnd
	scryptN       = 1 << 15
	scryptR       = 8
	scryptP       = 1
	// recoveryWindow is how many unused addresses a restore looks ahead.
	recoveryWindow = 250
)

var (
	// ErrWalletExists is returned when creating over an existing wallet.
	ErrWalletExists = errors.New("wallet already exists")
	// ErrNoWallet is returned when opening a directory without a wallet.
	ErrNoWallet = errors.New("no wallet")
	// ErrPassphrase is returned when the passphrase does not open the seed.
	ErrPassphrase = errors.New("wrong passphrase")
	// ErrInsufficientFunds is returned when coin selection comes short.
	ErrInsufficientFunds = errors.New("insufficient funds")
)

// SeedBackup is the encrypted seed as stored and as exported by backup.
type SeedBackup struct {
	Version  int    `json:"version"`
	Network  string `json:"network"`
	Birthday int64  `json:"birthday"` // unix seconds; restores rescan from here
	KDF      string `json:"kdf"`
	N        int    `json:"n"`
	R        int    `json:"r"`
	P        int    `json:"p"`
	Salt     []byte `json:"salt"`
	Nonce    []byte `json:"nonce"`
	Box      []byte `json:"box"`
}

func sealSeed(seed, pass []byte, network string, birthday time.Time) (*SeedBackup, error) {
	b := &SeedBackup{Version: 1, Network: network, Birthday: birthday.Unix(), KDF: "scrypt", N: scryptN, R: scryptR, P: scryptP,
		Salt: make([]byte, 16), Nonce: make([]byte, 24)}
	if _, err := rand.Read(b.Salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(b.Nonce); err != nil {
		return nil, err
	}
	key, err := scrypt.Key(pass, b.Salt, b.N, b.R, b.P, 32)
	if err != nil {
		return nil, fmt.Errorf("derive seed key: %w", err)
	}
	var k [32]byte
	var n [24]byte
	copy(k[:], key)
	copy(n[:], b.Nonce)
	b.Box = secretbox.Seal(nil, seed, &n, &k)
	return b, nil
}

// Open decrypts the seed with pass.
func (b *SeedBackup) Open(pass []byte) ([]byte, error) {
	if b.Version != 1 || b.KDF != "scrypt" || len(b.Nonce) != 24 || b.N > 1<<20 || b.R > 32 || b.P > 16 {
		return nil, fmt.Errorf("unsupported seed backup (version %d, kdf %q)", b.Version, b.KDF)
	}
	key, err := scrypt.Key(pass, b.Salt, b.N, b.R, b.P, 32)
	if err != nil {
		return nil, fmt.Errorf("derive seed key: %w", err)
	}
	var k [32]byte
	var n [24]byte
	copy(k[:], key)
	copy(n[:], b.Nonce)
	seed, ok := secretbox.Open(nil, b.Box, &n, &k)
	if !ok {
		return nil, ErrPassphrase
	}
	return seed, nil
}

// Wallet is the node's hot wallet: btcwallet plus the encrypted seed. It
// implements Funder for the channel Manager.
type Wallet struct {
	cfg    Config
	params *chaincfg.Params
	log    *slog.Logger
	w      *wallet.Wallet
	loader *wallet.Loader
	rpc    chain.Interface
	keys   *Keyring
	backup *SeedBackup
	pass   []byte
	// closeAlso run after Close (CloseAlso).
	closeAlso []func()
}

var _ Funder = (*Wallet)(nil)

// WalletExists reports whether dir holds a wallet.
func WalletExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, seedFile))
	return err == nil
}

// CreateWallet makes a new wallet in dir from a fresh random seed (or from
// backup, to restore) encrypted with passphrase, then opens it.
func CreateWallet(ctx context.Context, dir string, passphrase []byte, backup *SeedBackup, cfg Config, log *slog.Logger) (*Wallet, error) {
	sealed, seed, err := createWallet(dir, passphrase, backup, cfg)
	if err != nil {
		return nil, err
	}
	return openWallet(ctx, dir, sealed, seed, passphrase, cfg, log)
}

// createWallet writes btcwallet's database and seed.json; it returns the
// sealed and the clear seed.
func createWallet(dir string, passphrase []byte, backup *SeedBackup, cfg Config) (*SeedBackup, []byte, error) {
	params, err := NetParams(cfg.Network)
	if err != nil {
		return nil, nil, err
	}
	if WalletExists(dir) {
		return nil, nil, fmt.Errorf("create wallet in %s: %w", dir, ErrWalletExists)
	}
	if len(passphrase) == 0 {
		return nil, nil, errors.New("create wallet: empty passphrase")
	}
	if string(passphrase) == pubPassphrase {
		return nil, nil, fmt.Errorf("create wallet: %q is btcwallet's published watch-only passphrase; choose another wallet passphrase", pubPassphrase)
	}
	var seed []byte
	birthday := time.Now().Add(-2 * time.Hour)
	if backup != nil {
		if backup.Network != cfg.Network {
			return nil, nil, fmt.Errorf("restore wallet: backup is for %s, config says %s", backup.Network, cfg.Network)
		}
		if seed, err = backup.Open(passphrase); err != nil {
			return nil, nil, fmt.Errorf("restore wallet: %w", err)
		}
		birthday = time.Unix(backup.Birthday, 0)
	} else if seed, err = hdkeychain.GenerateSeed(hdkeychain.RecommendedSeedLen); err != nil {
		return nil, nil, fmt.Errorf("create wallet: seed: %w", err)
	}
	sealed, err := sealSeed(seed, passphrase, cfg.Network, birthday)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, walletDirName), 0o700); err != nil {
		return nil, nil, fmt.Errorf("create wallet dir: %w", err)
	}
	window := uint32(0)
	if backup != nil {
		window = recoveryWindow
	}
	useWalletKDF()
	loader := wallet.NewLoader(params, filepath.Join(dir, walletDirName), true, 10*time.Second, window)
	w, err := loader.CreateNewWallet([]byte(pubPassphrase), passphrase, seed, birthday)
	if err != nil {
		return nil, nil, fmt.Errorf("create btcwallet: %w", err)
	}
	_ = loader.UnloadWallet()
	_ = w
	raw, _ := json.MarshalIndent(sealed, "", "  ")
	// Written last: its presence means "a complete wallet is here".
	if err := atomicfile.Write(filepath.Join(dir, seedFile), raw, 0o600); err != nil {
		return nil, nil, fmt.Errorf("write seed: %w", err)
	}
	return sealed, seed, nil
}

// ReadBackup reads a seed backup file.
func ReadBackup(path string) (*SeedBackup, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read backup: %w", err)
	}
	var b SeedBackup
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("read backup %s: %w", path, err)
	}
	return &b, nil
}

// OpenWallet opens the wallet in dir, connects btcwallet to btcd (websocket
// notifications) and waits until it has caught up with the chain.
func OpenWallet(ctx context.Context, dir string, passphrase []byte, cfg Config, log *slog.Logger) (*Wallet, error) {
	if _, err := NetParams(cfg.Network); err != nil {
		return nil, err
	}
	if err := cfg.checkChainSource(); err != nil {
		return nil, err
	}
	backup, seed, err := readSeed(dir, passphrase)
	if err != nil {
		return nil, err
	}
	return openWallet(ctx, dir, backup, seed, passphrase, cfg, log)
}

// openWallet is OpenWallet once the seed is decrypted (CreateWallet has it
// already: no second scrypt).
func openWallet(ctx context.Context, dir string, backup *SeedBackup, seed, passphrase []byte, cfg Config, log *slog.Logger) (*Wallet, error) {
	params, err := NetParams(cfg.Network)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.checkChainSource(); err != nil {
		return nil, err
	}
	keys, err := NewKeyring(seed, params)
	if err != nil {
		return nil, err
	}
	useWalletKDF()
	loader := wallet.NewLoader(params, filepath.Join(dir, walletDirName), true, 10*time.Second, recoveryWindow)
	w, err := loader.OpenExistingWallet([]byte(pubPassphrase), false)
	if err != nil {
		return nil, fmt.Errorf("open btcwallet: %w", err)
	}
	if err := migrateWalletKDF(w, passphrase, log); err != nil {
		_ = loader.UnloadWallet()
		return nil, err
	}
	rpc, err := walletChainClient(cfg, params)
	if err != nil {
		_ = loader.UnloadWallet()
		return nil, err
	}
	w.SynchronizeRPC(rpc)
	ww := &Wallet{cfg: cfg, params: params, log: log, w: w, loader: loader, rpc: rpc, keys: keys, backup: backup, pass: passphrase}
	if err := ww.WaitSynced(ctx); err != nil {
		ww.Close()
		return nil, err
	}
	return ww, nil
}

// The KDF of btcwallet's master keys. btcwallet's default, scrypt with
// N = 2^18 (256 MiB), ran three times when a node created its wallet and
// once at every start: a configured seller peaked at 334 MiB before its
// first job. Two keys are derived:
//   - the public master key, from the passphrase "public", published in
//     this file as in lnd: its scrypt protects nothing (anyone can run it),
//     so it gets the cheapest parameters, and a start derives nothing big;
//   - the private master key, from the wallet passphrase: it gets the
//     parameters of seed.json (scrypt N = 2^15, r = 8, 32 MiB). Whoever
//     holds the data dir (or the backup `blackbox wallet backup` writes)
//     already tests a passphrase guess at that cost against seed.json, which
//     decrypts the seed and so every key; the costlier wallet.db was never
//     the cheapest way to the seed. The cost of the cheapest attack on the
//     passphrase is therefore the same as before. (Only a thief of
//     btcwallet/wallet.db alone, without seed.json beside it, gains: 8x
//     cheaper guesses, still 32 MiB of memory each.)
//
// snacl stores N, r, p with each key, so wallets made with btcwallet's
// defaults still open; migrateWalletKDF re-derives their keys once.
var (
	publicKDF  = waddrmgr.ScryptOptions{N: 16, R: 8, P: 1}
	privateKDF = waddrmgr.ScryptOptions{N: scryptN, R: scryptR, P: scryptP}
	kdfOnce    sync.Once
)

// walletKeyGen is btcwallet's SecretKeyGenerator: the parameters it is
// given (btcwallet's defaults) are replaced by publicKDF or privateKDF.
// CreateWallet refuses "public" as the wallet passphrase.
func walletKeyGen(pass *[]byte, _ *waddrmgr.ScryptOptions) (*snacl.SecretKey, error) {
	o := privateKDF
	if string(*pass) == pubPassphrase {
		o = publicKDF
	}
	return snacl.NewSecretKey(pass, o.N, o.R, o.P)
}

func useWalletKDF() { kdfOnce.Do(func() { waddrmgr.SetSecretKeyGen(walletKeyGen) }) }

// walletKDFs reads the scrypt N of btcwallet's public and private master
// keys (stored next to them, in waddrmgr's main bucket).
func walletKDFs(db walletdb.DB) (pub, priv int, err error) {
	err = walletdb.View(db, func(tx walletdb.ReadTx) error {
		ns := tx.ReadBucket([]byte("waddrmgr"))
		if ns == nil {
			return errors.New("no address manager")
		}
		main := ns.NestedReadBucket([]byte("main"))
		if main == nil {
			return errors.New("no address manager main bucket")
		}
		var sk snacl.SecretKey
		if err := sk.Unmarshal(main.Get([]byte("mpub"))); err != nil {
			return fmt.Errorf("public master key: %w", err)
		}
		pub = sk.Parameters.N
		if err := sk.Unmarshal(main.Get([]byte("mpriv"))); err != nil {
			return fmt.Errorf("private master key: %w", err)
		}
		priv = sk.Parameters.N
		return nil
	})
	return pub, priv, err
}

// migrateWalletKDF re-derives the master keys of a wallet made with
// btcwallet's default scrypt (earlier versions) with walletKeyGen, once:
// that start pays the old cost a last time, the next ones do not.
func migrateWalletKDF(w *wallet.Wallet, passphrase []byte, log *slog.Logger) error {
	pub, priv, err := walletKDFs(w.Database())
	if err != nil {
		return fmt.Errorf("open btcwallet: %w", err)
	}
	if pub <= publicKDF.N && priv <= privateKDF.N {
		return nil
	}
	log.Info("re-deriving the wallet's master keys with lighter scrypt parameters (once)", "public_n", pub, "private_n", priv)
	err = walletdb.Update(w.Database(), func(tx walletdb.ReadWriteTx) error {
		ns := tx.ReadWriteBucket([]byte("waddrmgr"))
		if pub > publicKDF.N {
			p := []byte(pubPassphrase)
			if err := w.Manager.ChangePassphrase(ns, p, p, false, &publicKDF); err != nil {
				return fmt.Errorf("public master key: %w", err)
			}
		}
		if priv > privateKDF.N {
			if err := w.Manager.ChangePassphrase(ns, passphrase, passphrase, true, &privateKDF); err != nil {
				return fmt.Errorf("private master key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate wallet keys: %w", err)
	}
	return nil
}

// WaitSynced blocks until btcwallet has processed the chain up to btcd's
// tip (tests call it after mining).
func (w *Wallet) WaitSynced(ctx context.Context) error {
	for {
		_, tip, err := w.rpc.GetBestBlock()
		if err != nil {
			return fmt.Errorf("wallet sync: %w", err)
		}
		if w.w.ChainSynced() && w.w.Manager.SyncedTo().Height >= tip {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wallet sync to %d: %w", tip, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops btcwallet and disconnects from btcd.
func (w *Wallet) Close() {
	w.w.Stop()
	w.w.WaitForShutdown()
	w.rpc.Stop()
	w.rpc.WaitForShutdown()
	_ = w.loader.UnloadWallet()
	for _, f := range w.closeAlso {
		f()
	}
}

// Keyring derives the channel keys from the same seed.
func (w *Wallet) Keyring() *Keyring { return w.keys }

// Backup is the encrypted seed (and birthday): restoring it with the
// passphrase gives back every address and every channel key.
func (w *Wallet) Backup() *SeedBackup { return w.backup }

// addressTimeout bounds how long a new address waits for the chain source.
const addressTimeout = 15 * time.Second

// Address returns a fresh BIP84 (P2WPKH) receive address.
func (w *Wallet) Address(ctx context.Context) (btcutil.Address, error) {
	// btcwallet asks the chain source to watch the new address, which
	// waits for btcd however long it is down: give up when ctx ends, or
	// after addressTimeout, and say why.
	ctx, cancel := context.WithTimeout(ctx, addressTimeout)
	defer cancel()
	a, err := await(ctx, func() (btcutil.Address, error) { return w.w.NewAddress(0, waddrmgr.KeyScopeBIP0084) })
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("new address: %w: the chain source did not answer in %s: is btcd running and reachable (payment.rpc_host)? `blackbox doctor` checks it", ErrChainDown, addressTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("new address: %w", err)
	}
	return a, nil
}

// NewScript implements Funder.
func (w *Wallet) NewScript(ctx context.Context) ([]byte, error) {
	a, err := w.Address(ctx)
	if err != nil {
		return nil, err
	}
	return txscript.PayToAddrScript(a)
}

// Balance is what the wallet holds: spendable with minConf confirmations,
// and in total (including unconfirmed and immature).
func (w *Wallet) Balance(minConf int32) (spendable, total btcutil.Amount, err error) {
	b, err := w.w.CalculateAccountBalances(0, minConf)
	if err != nil {
		return 0, 0, fmt.Errorf("balance: %w", err)
	}
	return b.Spendable, b.Total, nil
}

// FundTx implements Funder with btcwallet's coin selection; the fee must be
// within the configured bounds.
func (w *Wallet) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	if feeRate > w.cfg.MaxFeeRate {
		return nil, fmt.Errorf("fund: %w: %d sat/vB > max_fee_rate %d", ErrFeeBound, feeRate, w.cfg.MaxFeeRate)
	}
	if err := w.w.Unlock(w.pass, nil); err != nil {
		return nil, fmt.Errorf("unlock wallet: %w", err)
	}
	defer w.w.Lock()
	scope := waddrmgr.KeyScopeBIP0084
	create := func() (*txauthor.AuthoredTx, error) {
		return w.w.CreateSimpleTx(&scope, 0, outs, 1, btcutil.Amount(feeRate*1000), wallet.CoinSelectionLargest, false)
	}
	at, err := create()
	if err != nil {
		s, t, berr := w.Balance(1)
		if berr != nil {
			s, t = -1, -1
		}
		var short txauthor.InputSourceError
		if errors.As(err, &short) && int64(s) >= fundNeed(outs, feeRate) {
			// Coin selection came short, yet the balance has enough:
			// the wallet took in the block confirming its coins as it
			// chose. Choose again.
			at, err = create()
		}
		if err != nil {
			return nil, fmt.Errorf("fund: %w", fundError(err, outs, feeRate, s, t))
		}
	}
	fee := int64(at.TotalInput) - sumOut(at.Tx)
	if err := w.cfg.checkFee(fee, VSize(at.Tx)); err != nil {
		return nil, fmt.Errorf("fund: %w", err)
	}
	// Like every transaction we send, the funding passes the script engine.
	if len(at.PrevScripts) != len(at.Tx.TxIn) || len(at.PrevInputValues) != len(at.Tx.TxIn) {
		return nil, errors.New("fund: wallet returned no previous outputs to check")
	}
	prev := txscript.NewMultiPrevOutFetcher(nil)
	for i, in := range at.Tx.TxIn {
		prev.AddPrevOut(in.PreviousOutPoint, wire.NewTxOut(int64(at.PrevInputValues[i]), at.PrevScripts[i]))
	}
	for i := range at.Tx.TxIn {
		if err := verifyInput(at.Tx, i, at.PrevScripts[i], int64(at.PrevInputValues[i]), prev); err != nil {
			return nil, fmt.Errorf("fund: %w", err)
		}
	}
	return at.Tx, nil
}

// PublishTx implements Funder: btcwallet records the transaction and
// broadcasts it.
func (w *Wallet) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	if err := w.w.PublishTransaction(tx, ""); err != nil {
		return fmt.Errorf("publish %s: %w", tx.TxHash(), err)
	}
	w.cfg.light.remember(tx)
	return nil
}

// Send pays amount to addr at feeRate sat/vB (0: the chain's estimate,
// clamped to the bounds) and returns the broadcast transaction.
func (w *Wallet) Send(ctx context.Context, chain Chain, addr string, amount int64, feeRate int64) (*wire.MsgTx, error) {
	a, err := btcutil.DecodeAddress(addr, w.params)
	if err != nil || !a.IsForNet(w.params) {
		return nil, fmt.Errorf("send: %q is not an address on %s", addr, w.cfg.Network)
	}
	pk, err := txscript.PayToAddrScript(a)
	if err != nil {
		return nil, err
	}
	if IsDust(pk, amount) {
		return nil, fmt.Errorf("send: %d sat is below dust", amount)
	}
	if feeRate == 0 {
		feeRate = w.cfg.FeeRate(ctx, chain, 6)
	}
	tx, err := w.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(amount, pk)}, feeRate)
	if err != nil {
		return nil, err
	}
	if err := w.PublishTx(ctx, tx); err != nil {
		return nil, err
	}
	return tx, nil
}

// BirthdayHeight is the height of the wallet's birthday block, the block
// its recovery scanned from (btcwallet sets it once synced): ok is false
// until then.
func (w *Wallet) BirthdayHeight() (int32, bool) {
	var h int32
	var ok bool
	_ = walletdb.View(w.w.Database(), func(tx walletdb.ReadTx) error {
		bs, _, err := w.w.Manager.BirthdayBlock(tx.ReadBucket([]byte("waddrmgr")))
		if err == nil {
			h, ok = bs.Height, true
		}
		return nil
	})
	return h, ok
}
