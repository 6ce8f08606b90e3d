package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// CredentialName is the systemd credential holding the wallet passphrase
// (LoadCredential=wallet-passphrase:/etc/blackbox/wallet-passphrase):
// systemd hands it to the service in $CREDENTIALS_DIRECTORY, readable by
// the service alone and never in its environment.
const CredentialName = "wallet-passphrase"

// PassphraseEnv is the environment variable holding the wallet passphrase.
const PassphraseEnv = "BLACKBOX_WALLET_PASSPHRASE"

// PassphraseOf finds the wallet passphrase, first found wins:
// payment.passphrase_file; the systemd credential wallet-passphrase; the
// environment variable BLACKBOX_WALLET_PASSPHRASE. A file's trailing
// newline is not part of it.
func PassphraseOf(cfg payment.Config) health.Passphrase {
	readFile := func(path, source string) health.Passphrase {
		b, err := os.ReadFile(path)
		if err != nil {
			return health.Passphrase{Source: source, Err: fmt.Errorf("read the wallet passphrase from %s: %w", source, err)}
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return health.Passphrase{Source: source, Err: fmt.Errorf("the wallet passphrase in %s is empty", source)}
		}
		return health.Passphrase{Value: []byte(p), Source: source}
	}
	if cfg.PassphraseFile != "" {
		return readFile(cfg.PassphraseFile, "payment.passphrase_file "+cfg.PassphraseFile)
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		path := filepath.Join(dir, CredentialName)
		if _, err := os.Stat(path); err == nil {
			return readFile(path, "the systemd credential "+CredentialName)
		}
	}
	if p := os.Getenv(PassphraseEnv); p != "" {
		return health.Passphrase{Value: []byte(p), Source: PassphraseEnv}
	}
	return health.Passphrase{Err: errors.New("no wallet passphrase: set payment.passphrase_file, the systemd credential " +
		CredentialName + " or " + PassphraseEnv)}
}
