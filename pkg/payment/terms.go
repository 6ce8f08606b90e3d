package payment

import (
	"encoding/binary"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
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
	b = append(b, termsVersion)
	b = binary.AppendUvarint(b, uint64(len(t.Key)))
	b = append(b, t.Key...)
	b = binary.AppendUvarint(b, uint64(len(t.PayoutScript)))
	return append(b, t.PayoutScript...)
}

// DecodeSellerTerms parses terms from a seller (peer bytes): a known
// version, a valid compressed public key, a payout script of 1 to
// maxScriptLen bytes, and nothing after it. A failure is ErrMalformed.
func DecodeSellerTerms(b []byte) (SellerTerms, error) {
	var t SellerTerms
	if len(b) > MaxTermsSize {
		return t, fmt.Errorf("seller terms: %w: %d bytes > %d", ErrMalformed, len(b), MaxTermsSize)
	}
	if len(b) < 1 || b[0] != termsVersion {
		return t, fmt.Errorf("seller terms: %w: unknown version", ErrMalformed)
	}
	b = b[1:]
	field := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(b)
		// Lengths are minimal uvarints, so an encoding has one meaning.
		if k <= 0 || k != len(binary.AppendUvarint(nil, n)) || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("seller terms: %w: %s truncated", ErrMalformed, what)
		}
		v := b[k : k+int(n) : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	var err error
	if t.Key, err = field("key"); err != nil {
		return SellerTerms{}, err
	}
	if t.PayoutScript, err = field("payout script"); err != nil {
		return SellerTerms{}, err
	}
	if len(b) != 0 {
		return SellerTerms{}, fmt.Errorf("seller terms: %w: %d trailing bytes", ErrMalformed, len(b))
	}
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
