package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// openChannels opens the node database's channel records. The daemon holds
// the database while it runs; then these commands must go through its API.
func (a *App) openChannels() (*store.DB, *store.PaymentStore, error) {
	db, err := store.Open(filepath.Join(a.DataDir(), node.DBFile), 500*time.Millisecond)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("%w: the daemon is running; stop it to use this command until the local API serves payments", err)
	}
	if err != nil {
		return nil, nil, err
	}
	return db, store.NewPaymentStore(db), nil
}

// channelView is one line of `blackbox channels`.
type channelView struct {
	ID        string           `json:"id"`
	Peer      string           `json:"peer"`
	Role      string           `json:"role"`
	State     string           `json:"state"`
	Capacity  int64            `json:"capacity_sat"`
	Paid      int64            `json:"paid_sat"`
	Expiry    uint32           `json:"expiry_height"`
	Updates   uint64           `json:"updates"`
	Contracts map[string]int64 `json:"contracts,omitempty"`
	SpendTxid string           `json:"spend_txid,omitempty"`
	// CloseFee is what the close costs (fixed at open, out of the
	// seller's share); AfterClose what a close now would pay the seller
	// (0 when that is dust: no close can be made).
	CloseFee   int64 `json:"close_fee_sat"`
	AfterClose int64 `json:"after_close_sat"`
	// Reserved is what the running contracts reserved on the channel may
	// still pay (their worst case less what they paid); Free what a new
	// contract may still be promised. Only while the daemon runs.
	Reserved int64 `json:"reserved_sat,omitempty"`
	Free     int64 `json:"free_sat,omitempty"`
}

func newChannelsCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "channels",
		Short: "List payment channels: peer, capacity, paid, what a close costs and leaves, expiry, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := a.client().Channels(cmd.Context())
			if errors.Is(err, api.ErrNoDaemon) {
				list, err = a.loadChannels()
			}
			if err != nil {
				return err
			}
			sortChannels(list)
			reserved := map[string]int64{}
			if res, err := a.client().Reservations(cmd.Context()); err == nil {
				for _, r := range append(res.Seller, res.Buyer...) {
					reserved[r.Channel] += r.Outstanding
				}
			}
			views := make([]channelView, 0, len(list))
			for _, ch := range list {
				v := channelView{ID: ch.ID, Peer: ch.Peer, Role: ch.Role.String(), State: ch.State.String(),
					Capacity: ch.Capacity, Paid: ch.Paid, Expiry: ch.Expiry, Updates: ch.Seq, Contracts: ch.Contracts, SpendTxid: ch.SpendTxid,
					CloseFee: ch.CloseFee, AfterClose: ch.Payout()}
				if ch.State == payment.StateOpen || ch.State == payment.StatePending {
					v.Reserved, v.Free = reserved[ch.ID], max(ch.Room()-reserved[ch.ID], 0)
				}
				views = append(views, v)
			}
			if asJSON {
				return writeJSON(a.Stdout, views)
			}
			return printChannels(a.Stdout, views)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// loadChannels reads the channels from the database when no daemon runs.
func (a *App) loadChannels() ([]*payment.Channel, error) {
	db, st, err := a.openChannels()
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return st.LoadChannels()
}

func newChannelCmd(a *App) *cobra.Command {
	c := &cobra.Command{Use: "channel", Short: "Act on one payment channel"}
	c.AddCommand(&cobra.Command{
		Use:   "close ID",
		Short: "Close a channel: as seller, settle with the latest payment; as buyer, refund once expired",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveChannel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.closeChannel(cmd.Context(), id)
		},
	})
	return c
}

func (a *App) closeChannel(ctx context.Context, id string) error {
	txid, err := a.client().CloseChannel(ctx, id)
	if err == nil {
		fmt.Fprintf(a.Stdout, "broadcast: %s\n", txid)
		return nil
	}
	if !errors.Is(err, api.ErrNoDaemon) {
		return err
	}
	cfg, pass, err := a.walletSecrets()
	if err != nil {
		return err
	}
	// The channel keys come from the wallet's seed; no chain sync needed.
	b, err := payment.ReadBackup(filepath.Join(a.walletDir(), "seed.json"))
	if err != nil {
		return fmt.Errorf("channel keys need the wallet in %s: %w", a.walletDir(), err)
	}
	seed, err := b.Open(pass)
	if err != nil {
		return err
	}
	params, _ := payment.NetParams(cfg.Network)
	keys, err := payment.NewKeyring(seed, params)
	if err != nil {
		return err
	}
	db, st, err := a.openChannels()
	if err != nil {
		return err
	}
	defer db.Close()
	chain, cfg, stop, err := a.startChain(ctx, cfg)
	if err != nil {
		return err
	}
	defer stop()
	// The close is a channel change: the backup follows, as in the daemon.
	backup, err := payment.NewBackupStore(st, node.BackupPath(a.DataDir(), cfg))
	if err != nil {
		return err
	}
	m, err := payment.NewManager(payment.ManagerConfig{Config: cfg, Chain: chain, Store: backup, Keys: keys, Log: a.Logger()})
	if err != nil {
		return err
	}
	ch, err := m.Channel(id)
	if err != nil {
		return err
	}
	close := m.Close
	if ch.Role == payment.RoleBuyer {
		close = m.Refund
	}
	tx, err := close(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "%s broadcast: %s\n", map[payment.Role]string{payment.RoleBuyer: "refund", payment.RoleSeller: "close"}[ch.Role], tx.TxHash())
	return nil
}
