package payment

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CreateWalletFiles makes a new wallet in dir, like CreateWallet, without
// opening it or asking the chain source anything: a node that starts for
// the first time while its chain source is down has its seed (and so its
// channel keys) at once, and opens the wallet when the chain source
// answers.
func CreateWalletFiles(dir string, passphrase []byte, cfg Config) (*SeedBackup, error) {
	sealed, _, err := createWallet(dir, passphrase, nil, cfg)
	return sealed, err
}

// ReadSeed decrypts the seed of the wallet in dir with passphrase, without
// opening btcwallet's database: the node derives its channel keys (and a
// payout address) from it while the wallet waits for the chain source.
func ReadSeed(dir string, passphrase []byte) ([]byte, error) {
	_, seed, err := readSeed(dir, passphrase)
	return seed, err
}

// readSeed reads dir's encrypted seed and decrypts it with passphrase.
func readSeed(dir string, passphrase []byte) (*SeedBackup, []byte, error) {
	b, err := ReadBackup(filepath.Join(dir, seedFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("open wallet in %s: %w", dir, ErrNoWallet)
		}
		return nil, nil, err
	}
	seed, err := b.Open(passphrase)
	if err != nil {
		return nil, nil, fmt.Errorf("open wallet: %w", err)
	}
	return b, seed, nil
}
