package payment

import (
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
)

// FirstAddress is the wallet's first receive address, derived from the seed
// alone as btcwallet derives it (BIP84 scope m/84'/0'/0'/0/0, btcwallet's
// coin type 0 on every network): the node's default payout address when it
// starts while its chain source is down and the wallet cannot be asked for
// a fresh one. btcwallet hands out this address first, so it watches it
// once it has given any address.
func FirstAddress(seed []byte, params *chaincfg.Params) (btcutil.Address, error) {
	key, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		return nil, fmt.Errorf("first address: %w", err)
	}
	for _, i := range []uint32{84 + hdkeychain.HardenedKeyStart, hdkeychain.HardenedKeyStart, hdkeychain.HardenedKeyStart, 0, 0} {
		if key, err = key.DeriveNonStandard(i); err != nil { //nolint:staticcheck // btcwallet derives so
			return nil, fmt.Errorf("first address: %w", err)
		}
	}
	pub, err := key.ECPubKey()
	if err != nil {
		return nil, fmt.Errorf("first address: %w", err)
	}
	return btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub.SerializeCompressed()), params)
}
