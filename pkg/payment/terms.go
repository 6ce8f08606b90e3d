package payment

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// MaxTermsSize caps encoded seller terms before decoding.
const MaxTermsSize = 1024

// termsVersion is the first byte of encoded seller terms.
const termsVersion = 1

// Encode serializes the terms as the seller puts them in a contract
// acceptance: a version byte, then the key and the payout script, each
// prefixed by its length as a uvarint. The buyer decodes them with
// DecodeSellerTerms before it funds a channel.
func (t SellerTerms) Encode() []byte {
	b := make([]byte, 0, 3+len(t.Key)+len(t.PayoutScript))
	return wire.AppendFields(b, termsVersion, t.Key, t.PayoutScript)
}

// DecodeSellerTerms parses terms from a seller (peer bytes): a known
// version, a valid compressed public key, a payout script of 1 to
// maxScriptLen bytes, and nothing after it. A failure is ErrMalformed.
func DecodeSellerTerms(b []byte) (SellerTerms, error) {
	var t SellerTerms
	if len(b) > MaxTermsSize {
		return t, fmt.Errorf("seller terms: %w: %d bytes > %d", ErrMalformed, len(b), MaxTermsSize)
	}
	// Lengths are minimal uvarints, so an encoding has one meaning.
	fs, err := wire.SplitFields(b, termsVersion, MaxTermsSize, MaxTermsSize)
	if err != nil {
		return t, fmt.Errorf("seller terms (key, payout script): %w", wire.Wrap(err, ErrMalformed, ErrMalformed))
	}
	t.Key, t.PayoutScript = fs[0], fs[1]
	if len(t.Key) != btcec.PubKeyBytesLenCompressed {
		return SellerTerms{}, fmt.Errorf("seller terms: %w: key of %d bytes", ErrMalformed, len(t.Key))
	}
	if _, err := btcec.ParsePubKey(t.Key); err != nil {
		return SellerTerms{}, fmt.Errorf("seller terms: %w: key: %v", ErrMalformed, err)
	}
	if len(t.PayoutScript) == 0 || len(t.PayoutScript) > maxScriptLen {
		return SellerTerms{}, fmt.Errorf("seller terms: %w: payout script of %d bytes", ErrMalformed, len(t.PayoutScript))
	}
	return t, nil
}
