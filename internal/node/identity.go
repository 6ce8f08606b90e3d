package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
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
		if err := writeFileAtomic(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("save identity key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("read identity key: %w", err)
	}
}

// writeFileAtomic writes data to path through a synced temporary file and a
// rename, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
