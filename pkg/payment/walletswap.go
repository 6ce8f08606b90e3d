package payment

import "github.com/btcsuite/btcd/btcec/v2"

// Replacing the node's wallet while it runs (the node's `wallet restore`
// through its API): the node checks that nothing is keyed by the old seed
// (no channel, escrow or contract under way), then swaps the keys in place
// so that every holder of the Keyring (the channel and escrow managers)
// derives from the new seed.

// Replace makes k derive from other's seed from now on, dropping the keys
// it derived before.
func (k *Keyring) Replace(other *Keyring) {
	other.mu.Lock()
	base := other.base
	other.mu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.base = base
	k.cache = map[[2]uint32]*btcec.PrivateKey{}
}

// SetPayoutAddress changes where the seller's closes pay from now on: a
// node whose payouts go to its own wallet (no payment.payout_address)
// restored another seed. Only while no channel is open (the node checks).
func (m *Manager) SetPayoutAddress(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.PayoutAddress = addr
}
