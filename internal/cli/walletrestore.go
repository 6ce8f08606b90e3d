package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// maxBackupFile caps the backup file read (a seed backup is ~400 bytes).
const maxBackupFile = 64 << 10

func newWalletRestoreCmd(a *App) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the wallet with the one a backup file restores, and rescan the chain from its birthday",
		Long: `restore recreates the wallet from a seed backup (blackbox wallet backup FILE),
encrypted with the wallet passphrase, and rescans the chain from its birthday.

With the daemon running it goes through its API: refused, naming them, while
channels, escrows or contracts keyed by the current seed are under way;
otherwise the daemon stops selling and buying, moves the current wallet aside
(DATA_DIR/wallet.replaced-TIME, kept: its seed may still own coins), restores,
rescans and resumes, without a restart. A file that is not a backup, of
another network or under another passphrase changes nothing.

With no daemon it writes the wallet in the data dir, which must hold none.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := os.Stat(args[0])
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			if st.Size() > maxBackupFile {
				return fmt.Errorf("read backup %s: %d bytes is not a seed backup (a few hundred bytes)", args[0], st.Size())
			}
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			res, err := a.client().WalletRestore(cmd.Context(), raw)
			if errors.Is(err, api.ErrNoDaemon) {
				return a.createWallet(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "wallet restored by the running daemon (%s), balance %d sat spendable, %d sat total\nthe previous wallet is kept in %s\n",
				payment.CanonicalNetwork(res.Network), res.Spendable, res.Total, res.Previous)
			return nil
		},
	}
}
