package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

func newRestoreCmd(a *App) *cobra.Command {
	var from string
	c := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild a lost database's payment channels from the channel backup",
		Long: `restore rebuilds the node's database (blackbox.db) from its channel backup
(payment.backup_file, by default channels.backup in the data dir, or --from FILE) after the database was lost
or damaged. The backup is rewritten on every channel open, state change and
close before it is acknowledged, and within a second of every payment: it
holds every open channel's parameters and its latest signed payment; payments
newer than the backup are in the payment log beside the database
(blackbox.db.paylog), which the restored database takes in when it is still
there. So after a restore the node closes each channel for the latest amount
it was paid (as a seller) or refunds it after expiry (as a buyer). Channel keys come from the wallet (the wallet directory must be the
node's own, or restored from its seed first).

Contracts, offers and reputation records are not in the backup: they start
empty. Stop the node first; a database that is still there (non-empty) must
be moved aside by hand: restore never overwrites one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				cfg, err := a.paymentConfig()
				if err != nil {
					return err
				}
				from = node.BackupPath(a.DataDir(), cfg)
			}
			b, err := payment.ReadChannelBackup(from)
			if err != nil {
				return err
			}
			path := filepath.Join(a.DataDir(), node.DBFile)
			if st, err := os.Stat(path); err == nil && st.Size() > 0 {
				return fmt.Errorf("%s exists (%d bytes): restore never overwrites a database; stop the node and move it aside first", path, st.Size())
			}
			// Built beside the database and renamed into place, so an
			// interrupted restore leaves no half database behind.
			tmp := path + ".restoring"
			if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			db, err := store.OpenFresh(tmp, 500*time.Millisecond)
			if err != nil {
				return err
			}
			if err := payment.RestoreChannelBackup(b, store.NewPaymentStore(db)); err != nil {
				db.Close()
				os.Remove(tmp)
				return err
			}
			if err := db.Close(); err != nil {
				return err
			}
			store.RemoveMarker(tmp)
			if err := os.Rename(tmp, path); err != nil {
				return fmt.Errorf("put the restored database in place: %w", err)
			}
			// Opening it checks it, writes its marker and takes in the
			// payment log left beside the lost database (payments newer
			// than the backup).
			db, err = store.Open(path, 500*time.Millisecond)
			if err != nil {
				return err
			}
			restored, err := store.NewPaymentStore(db).LoadChannels()
			if err := errors.Join(err, db.Close()); err != nil {
				return err
			}
			var sold, bought int
			var held int64
			for _, c := range restored {
				if c.State == payment.StateClosed || c.State == payment.StateFailed {
					continue
				}
				if c.Role == payment.RoleSeller {
					sold++
					held += c.Paid
				} else {
					bought++
				}
			}
			fmt.Fprintf(a.Stdout, "restored %d channels from %s (backup of %s): %d as seller holding %d sat signed, %d as buyer\n",
				len(b.Channels), from, b.Written.Format(time.RFC3339), sold, held, bought)
			fmt.Fprintln(a.Stdout, "start the node (blackbox serve) to close or refund them as their terms allow")
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "channel backup file (default payment.backup_file, else DATA_DIR/"+node.BackupFile+")")
	return c
}
