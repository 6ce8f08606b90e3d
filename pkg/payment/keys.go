package payment

import (
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
)

// KeyFamily separates the purposes keys are derived for, as lnd's key
// families do: m/1017'/coin'/family'/0/index.
type KeyFamily uint32

// Key families. Stored in channel records by number: never renumber.
const (
	// FamilyChannelBuyer keys are fresh per channel the node funds.
	FamilyChannelBuyer KeyFamily = 0
	// FamilySeller holds the node's one payment key, published in offers.
	FamilySeller KeyFamily = 1
	// FamilyEscrow keys are fresh per escrow (buyer, seller or arbiter).
	FamilyEscrow KeyFamily = 2
)

const purposeBlackbox = 1017

// Keyring derives the node's channel and escrow keys from the wallet seed, so
// one seed backup restores every key.
type Keyring struct {
	base *hdkeychain.ExtendedKey // m/1017'/coin'

	// Derivation costs several point multiplications; a channel signs with
	// the same key for every update, so derived keys are cached.
	mu    sync.Mutex
	cache map[[2]uint32]*btcec.PrivateKey
}

// NewKeyring derives the keyring's base from seed for the given network.
func NewKeyring(seed []byte, params *chaincfg.Params) (*Keyring, error) {
	master, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		return nil, fmt.Errorf("keyring: master key: %w", err)
	}
	purpose, err := master.Derive(hdkeychain.HardenedKeyStart + purposeBlackbox)
	if err != nil {
		return nil, fmt.Errorf("keyring: purpose: %w", err)
	}
	coin, err := purpose.Derive(hdkeychain.HardenedKeyStart + params.HDCoinType)
	if err != nil {
		return nil, fmt.Errorf("keyring: coin type: %w", err)
	}
	return &Keyring{base: coin, cache: map[[2]uint32]*btcec.PrivateKey{}}, nil
}

// Key returns the private key at m/1017'/coin'/family'/0/index.
func (k *Keyring) Key(family KeyFamily, index uint32) (*btcec.PrivateKey, error) {
	id := [2]uint32{uint32(family), index}
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.cache[id]; ok {
		return p, nil
	}
	f, err := k.base.Derive(hdkeychain.HardenedKeyStart + uint32(family))
	if err != nil {
		return nil, fmt.Errorf("derive family %d: %w", family, err)
	}
	branch, err := f.Derive(0)
	if err != nil {
		return nil, fmt.Errorf("derive family %d branch: %w", family, err)
	}
	child, err := branch.Derive(index)
	if err != nil {
		return nil, fmt.Errorf("derive family %d index %d: %w", family, index, err)
	}
	priv, err := child.ECPrivKey()
	if err != nil {
		return nil, fmt.Errorf("derive family %d index %d: %w", family, index, err)
	}
	k.cache[id] = priv
	return priv, nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
