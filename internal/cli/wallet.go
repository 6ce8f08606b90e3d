package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The wallet commands ask the running daemon, which holds the wallet open
// (btcwallet's database takes one process): address, balance and send go
// through its API, and so does restore (walletrestore.go); create refuses
// while it runs. With no daemon they open the wallet in the data dir
// themselves.

// paymentConfig is the typed "payment" section.
func (a *App) paymentConfig() (payment.Config, error) {
	var cfg payment.Config
	return cfg, a.Section("payment", &cfg)
}

// walletSecrets is the payment config and the wallet passphrase.
func (a *App) walletSecrets() (payment.Config, []byte, error) {
	cfg, err := a.paymentConfig()
	if err != nil {
		return cfg, nil, err
	}
	pass, err := node.WalletPassphrase(cfg)
	return cfg, pass, err
}

func (a *App) walletDir() string { return filepath.Join(a.DataDir(), "wallet") }

// openWallet opens the data dir's wallet, connected to btcd.
func (a *App) openWallet(ctx context.Context) (*payment.Wallet, payment.Config, error) {
	cfg, pass, err := a.walletSecrets()
	if err != nil {
		return nil, cfg, err
	}
	if cfg.Backend == payment.BackendNeutrino && !payment.WalletExists(a.walletDir()) {
		return nil, cfg, fmt.Errorf("%w in %s: run `blackbox wallet create` or `blackbox wallet restore FILE`", payment.ErrNoWallet, a.walletDir())
	}
	_, cfg, stop, err := a.startChain(ctx, cfg)
	if err != nil {
		return nil, cfg, err
	}
	w, err := payment.OpenWallet(ctx, a.walletDir(), pass, cfg, a.Logger())
	if errors.Is(err, payment.ErrNoWallet) {
		stop()
		return nil, cfg, fmt.Errorf("%w in %s: run `blackbox wallet create` or `blackbox wallet restore FILE`", err, a.walletDir())
	}
	if err != nil {
		stop()
		return nil, cfg, err
	}
	w.CloseAlso(stop)
	return w, cfg, nil
}

func newWalletCmd(a *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "wallet",
		Short: "The buyer's hot Bitcoin wallet (btcwallet, seed encrypted with your passphrase)",
	}
	c.AddCommand(
		&cobra.Command{
			Use:   "create",
			Short: "Create a wallet with a fresh seed (then back it up)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := a.refuseWhileRunning(cmd.Context(), "wallet create"); err != nil {
					return err
				}
				return a.createWallet(cmd.Context(), "")
			},
		},
		&cobra.Command{
			Use:   "address",
			Short: "Print a fresh receive address (P2WPKH)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if addr, err := a.client().WalletAddress(cmd.Context()); !errors.Is(err, api.ErrNoDaemon) {
					if err == nil {
						fmt.Fprintln(a.Stdout, addr)
					}
					return err
				}
				w, _, err := a.openWallet(cmd.Context())
				if err != nil {
					return err
				}
				defer w.Close()
				addr, err := w.Address(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(a.Stdout, addr.EncodeAddress())
				return nil
			},
		},
		newWalletBalanceCmd(a),
		newWalletSendCmd(a),
		&cobra.Command{
			Use:   "backup FILE",
			Short: "Write the encrypted seed (restores every address and channel key) to FILE, or - for stdout",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				b, err := payment.ReadBackup(filepath.Join(a.walletDir(), "seed.json"))
				if err != nil {
					return fmt.Errorf("no wallet in %s: %w", a.walletDir(), err)
				}
				raw, _ := json.MarshalIndent(b, "", "  ")
				raw = append(raw, '\n')
				if args[0] == "-" {
					_, err = a.Stdout.Write(raw)
					return err
				}
				if err := os.WriteFile(args[0], raw, 0o600); err != nil {
					return fmt.Errorf("write backup: %w", err)
				}
				fmt.Fprintf(a.Stdout, "backup written to %s (encrypted with the wallet passphrase)\n", args[0])
				return nil
			},
		},
		newWalletRestoreCmd(a),
	)
	return c
}

func (a *App) createWallet(ctx context.Context, backupFile string) error {
	cfg, pass, err := a.walletSecrets()
	if err != nil {
		return err
	}
	var backup *payment.SeedBackup
	if backupFile != "" {
		if backup, err = payment.ReadBackup(backupFile); err != nil {
			return err
		}
	}
	_, cfg, stop, err := a.startChain(ctx, cfg)
	if err != nil {
		return err
	}
	w, err := payment.CreateWallet(ctx, a.walletDir(), pass, backup, cfg, a.Logger())
	if err != nil {
		stop()
		return err
	}
	w.CloseAlso(stop)
	defer w.Close()
	spendable, _, err := w.Balance(1)
	if err != nil {
		return err
	}
	verb := "created"
	if backup != nil {
		verb = "restored"
	}
	fmt.Fprintf(a.Stdout, "wallet %s in %s (%s), balance %d sat\n", verb, a.walletDir(), cfg.Network, int64(spendable))
	return nil
}

func newWalletBalanceCmd(a *App) *cobra.Command {
	var asJSON bool
	var minConf int32
	c := &cobra.Command{
		Use:   "balance",
		Short: "Print the spendable and total balance in satoshis, and the money in channels, closing and settled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var s, t btcutil.Amount
			if b, err := a.client().WalletBalance(cmd.Context(), minConf); errors.Is(err, api.ErrNoDaemon) {
				w, _, err := a.openWallet(cmd.Context())
				if err != nil {
					return err
				}
				defer w.Close()
				if s, t, err = w.Balance(minConf); err != nil {
					return err
				}
			} else if err != nil {
				return err
			} else {
				s, t = btcutil.Amount(b.Spendable), btcutil.Amount(b.Total)
			}
			network := ""
			if pc, err := a.paymentConfig(); err == nil {
				network = payment.CanonicalNetwork(pc.Network)
			}
			h, ok := a.channelHoldings(cmd.Context())
			if asJSON {
				out := struct {
					api.Balance
					Channels *payment.Holdings `json:"channels,omitempty"`
				}{Balance: api.Balance{Spendable: int64(s), Total: int64(t), Network: network}}
				if ok {
					out.Channels = &h
				}
				return writeJSON(a.Stdout, out)
			}
			fmt.Fprintf(a.Stdout, "network   %s\nspendable %s (%d+ confirmations)\ntotal     %s\n", network, sats(int64(s)), minConf, sats(int64(t)))
			if ok {
				writeHoldings(a.Stdout, "channels  ", h)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().Int32Var(&minConf, "min-conf", 1, "confirmations for spendable coins")
	return c
}

func newWalletSendCmd(a *App) *cobra.Command {
	var feeRate int64
	c := &cobra.Command{
		Use:   "send ADDRESS AMOUNT_SAT",
		Short: "Send AMOUNT_SAT satoshis to ADDRESS (fee bounded by payment.max_fee_rate and max_fee)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			amount, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || amount <= 0 {
				return fmt.Errorf("amount %q: want a positive number of satoshis", args[1])
			}
			txid, err := a.client().WalletSend(cmd.Context(), api.SendRequest{Address: args[0], AmountSat: amount, FeeRate: feeRate})
			if !errors.Is(err, api.ErrNoDaemon) {
				if err == nil {
					fmt.Fprintln(a.Stdout, txid)
				}
				return err
			}
			w, cfg, err := a.openWallet(cmd.Context())
			if err != nil {
				return err
			}
			defer w.Close()
			chain, closeChain, err := a.chainOf(cfg)
			if err != nil {
				return err
			}
			defer closeChain()
			tx, err := w.Send(cmd.Context(), chain, args[0], amount, feeRate)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, tx.TxHash())
			return nil
		},
	}
	c.Flags().Int64Var(&feeRate, "fee-rate", 0, "fee rate in sat/vB (default: the node's estimate, clamped to the configured bounds)")
	return c
}

// refuseWhileRunning stops `wallet create` while a daemon runs on the data
// dir: the daemon holds btcwallet's database open (restore goes through
// its API instead, which checks that nothing is keyed by the seed).
func (a *App) refuseWhileRunning(ctx context.Context, what string) error {
	s, err := a.client().Status(ctx)
	if errors.Is(err, api.ErrNoDaemon) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("a blackbox daemon is running on %s (peer %s) and holds the wallet open: stop it first (systemctl stop blackbox, or Ctrl-C on `blackbox serve`), run `blackbox %s`, then start it again (to replace the wallet with a backup while it runs: `blackbox wallet restore FILE`)",
		a.DataDir(), s.PeerID, what)
}
