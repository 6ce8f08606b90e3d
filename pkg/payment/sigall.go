package payment

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/txscript"
)

// verifySigAll checks a signature as a SIGHASH_ALL CHECKSIG of the script
// engine with the standard flags would, and no looser: sigWithType (DER
// then the sighash type) by key over digest, the BIP 143 sighash of the
// input it signs. It asks for:
//   - the sighash type SIGHASH_ALL (the engine takes any defined type);
//   - the canonical encoding of the signature's (r, s): strict DER
//     (BIP 66) with a low S, as ecdsa.Signature.Serialize writes it and
//     every signer here signs (an encoding the engine rejects is not
//     canonical);
//   - a signature that verifies.
//
// The seller checks a channel's first payment update with the script
// engine (closeTx) and the next ones with this alone: they differ from the
// first only in their outputs' amounts and the buyer's signature, and
// skipping the engine saves its two public-key parses and two more
// sighashes per payment (a third of the check). An escrow's co-signer
// checks a peer's signature with it before the spend is completed (and the
// completed spend goes through the engine before it is sent).
func verifySigAll(key *btcec.PublicKey, digest, sigWithType []byte) error {
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
	if !sig.Verify(digest, key) {
		return errors.New("signature does not verify")
	}
	return nil
}
