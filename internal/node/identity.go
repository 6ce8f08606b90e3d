package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// IdentityFile is the node's libp2p key inside the data dir.
const IdentityFile = "identity.key"

// LoadOrCreateIdentity reads the node's Ed25519 identity key from dir, or
// creates one (0600) on first start. A key file that others can read is
// refused rather than used: it is the node's name on the network.
func LoadOrCreateIdentity(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, IdentityFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("identity key %s is readable by others (mode %o): run chmod 600 %s", path, st.Mode().Perm(), path)
		}
		k, err := crypto.UnmarshalPrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("identity key %s is corrupt: %w", path, err)
		}
		return k, nil
	case errors.Is(err, fs.ErrNotExist):
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		b, err := crypto.MarshalPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("save identity key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("read identity key: %w", err)
	}
}
