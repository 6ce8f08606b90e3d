package payment

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/txscript"
)

// verifyBuyerSig checks a payment update's signature, sigWithType (DER
// then the sighash type), over the close's digest under the buyer's key.
// The seller checks the first update of a channel with the script engine
// (closeTx); the next ones differ from it only in their outputs' amounts
// and the buyer's signature, so of what the engine checks with the
// standard flags, this is what is left to check, and no looser:
//   - the sighash type is SIGHASH_ALL (the engine takes any defined type);
//   - the signature is the canonical encoding of its (r, s): strict DER
//     (BIP 66) with a low S, as ecdsa.Signature.Serialize writes it and the
//     buyer signs (an encoding the engine rejects is not canonical);
//   - it verifies over digest, the BIP 143 sighash of the close.
//
// Skipping the engine for those updates saves its two public-key parses
// and two more sighashes per payment (a third of the check).
func verifyBuyerSig(buyer *btcec.PublicKey, digest, sigWithType []byte) error {
	if len(sigWithType) < 2 {
		return errors.New("signature too short")
	}
	if t := txscript.SigHashType(sigWithType[len(sigWithType)-1]); t != txscript.SigHashAll {
		return fmt.Errorf("sighash type %#x, want SIGHASH_ALL", byte(t))
	}
	der := sigWithType[:len(sigWithType)-1]
	sig, err := ecdsa.ParseDERSignature(der)
	if err != nil {
		return err
	}
	if !bytes.Equal(sig.Serialize(), der) {
		return errors.New("signature not in canonical DER with a low S")
	}
	if !sig.Verify(digest, buyer) {
		return errors.New("signature does not verify")
	}
	return nil
}
