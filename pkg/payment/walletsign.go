package payment

import (
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

var _ OutputSigner = (*Wallet)(nil)

// SignOutput implements OutputSigner for the wallet's own P2WPKH
// addresses: the seller's CPFP child of a close spends the payout output
// with it when payouts go to the wallet (bump.go).
func (w *Wallet) SignOutput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	class, addrs, _, err := txscript.ExtractPkScriptAddrs(pkScript, w.params)
	if err != nil || class != txscript.WitnessV0PubKeyHashTy || len(addrs) != 1 {
		return nil, fmt.Errorf("sign output: %w: not a P2WPKH script", ErrNotOurs)
	}
	if ok, err := w.w.HaveAddress(addrs[0]); err != nil || !ok {
		return nil, fmt.Errorf("sign output %s: %w", addrs[0], ErrNotOurs)
	}
	// FundTx unlocks and locks the wallet the same way; a bump that
	// loses that race fails and is retried at the next block.
	if w.w.Locked() {
		if err := w.w.Unlock(w.pass, nil); err != nil {
			return nil, fmt.Errorf("unlock wallet: %w", err)
		}
		defer w.w.Lock()
	}
	key, err := w.w.PrivKeyForAddress(addrs[0])
	if err != nil {
		return nil, fmt.Errorf("sign output %s: %w", addrs[0], err)
	}
	if key == nil {
		return nil, errors.New("sign output: wallet returned no key")
	}
	return txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, prevs), idx, amount, pkScript, txscript.SigHashAll, key, true)
}
