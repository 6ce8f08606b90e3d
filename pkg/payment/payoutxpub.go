package payment

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
)

// payoutGap is how far past the last child a channel pays a payout xpub's
// children are searched: a wallet restoring the xpub finds its coins as
// long as no more than its gap limit (20 in most) children in a row are
// unused, so the next channel takes the child after the last one used,
// never one further on.
const payoutGap = 20

// payoutChildren caches a payout xpub's external children (m/0/i) and their
// P2WPKH scripts: deriving one is an elliptic-curve multiplication, and
// AcceptOpen looks a script up among all of them.
type payoutChildren struct {
	mu      sync.Mutex
	ext     *hdkeychain.ExtendedKey
	scripts [][]byte
	index   map[string]uint32
}

// script returns child i's output script (cfg's xpub).
func (p *payoutChildren) script(cfg *Config, i uint32) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ext == nil {
		x, err := hdkeychain.NewKeyFromString(cfg.PayoutXpub)
		if err != nil {
			return nil, fmt.Errorf("payout xpub: %w", err)
		}
		if p.ext, err = x.Derive(0); err != nil {
			return nil, fmt.Errorf("payout xpub: %w", err)
		}
		p.index = map[string]uint32{}
	}
	params, err := NetParams(cfg.Network)
	if err != nil {
		return nil, err
	}
	for uint32(len(p.scripts)) <= i {
		n := uint32(len(p.scripts))
		s, err := childScript(p.ext, n, params)
		if err != nil {
			return nil, err
		}
		p.scripts = append(p.scripts, s)
		p.index[string(s)] = n
	}
	return p.scripts[i], nil
}

// childScript is the P2WPKH script of ext's child i (ext: an xpub's
// external chain, m/0).
func childScript(ext *hdkeychain.ExtendedKey, i uint32, params *chaincfg.Params) ([]byte, error) {
	child, err := ext.Derive(i)
	if err != nil {
		return nil, fmt.Errorf("payout xpub child %d: %w", i, err)
	}
	pub, err := child.ECPubKey()
	if err != nil {
		return nil, err
	}
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub.SerializeCompressed()), params)
	if err != nil {
		return nil, err
	}
	return txscript.PayToAddrScript(a)
}

// payoutIndex is the xpub child the next channel's closes pay: the one
// after the highest child a channel of ours pays (0 for the first). Children
// are used in order, so a wallet holding the xpub finds every payout, and
// one is handed out again only until a channel uses it (two buyers opening
// at once may share one address).
func (m *Manager) payoutIndex() (uint32, error) {
	used := map[string]bool{}
	m.chans.each(func(_ string, c *Channel) {
		if c.Role == RoleSeller {
			used[string(c.SellerScript)] = true
		}
		if c.Sweep != nil {
			used[string(c.Sweep.PayTo)] = true
		}
	})
	next := uint32(0)
	for i := uint32(0); i < next+payoutGap; i++ {
		s, err := m.payout.script(&m.cfg, i)
		if err != nil {
			return 0, err
		}
		if used[string(s)] {
			next = i + 1
		}
	}
	return next, nil
}

// ownXpubScript reports whether s is one of the payout xpub's children a
// channel may pay: any up to payoutGap past the next one handed out.
func (m *Manager) ownXpubScript(s []byte) bool {
	next, err := m.payoutIndex()
	if err != nil {
		return false
	}
	for i := uint32(0); i < next+payoutGap; i++ {
		own, err := m.payout.script(&m.cfg, i)
		if err != nil {
			return false
		}
		if bytes.Equal(own, s) {
			return true
		}
	}
	return false
}
