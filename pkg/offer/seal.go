package offer

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hdevalence/ed25519consensus"
	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"
)

// sealed is a signed offer envelope decoded, its signature not yet
// checked. It is what libp2p's record.ConsumeTypedEnvelope does in one
// step, cut in three (unseal, verify, open) so that many envelopes can
// have their signatures checked at once (openBatch).
type sealed struct {
	key     crypto.PubKey
	payload []byte
	sig     []byte
	// signed is what the signature covers: the envelope's domain, payload
	// type and payload, each after its length as an unsigned varint (the
	// libp2p signed-envelope rule, RFC 0002).
	signed []byte
}

// unseal decodes an envelope of at most MaxEnvelopeSize bytes and its
// signer's key.
func unseal(data []byte) (*sealed, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w (%d bytes > %d)", ErrTooLarge, len(data), MaxEnvelopeSize)
	}
	var e recordpb.Envelope
	if err := proto.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	key, err := crypto.PublicKeyFromProto(e.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	s := &sealed{key: key, payload: e.Payload, sig: e.Signature}
	for _, f := range [][]byte{[]byte(EnvelopeDomain), e.PayloadType, e.Payload} {
		s.signed = binary.AppendUvarint(s.signed, uint64(len(f)))
		s.signed = append(s.signed, f...)
	}
	return s, nil
}

// verify checks the signature alone, with the key type's own rule (for
// Ed25519, crypto/ed25519's).
func (s *sealed) verify() error {
	ok, err := s.key.Verify(s.signed, s.sig)
	if err != nil {
		return fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if !ok {
		return fmt.Errorf("%w: envelope: %v", ErrMalformed, record.ErrInvalidSignature)
	}
	return nil
}

// ed25519Key is the signer's key if it is an Ed25519 one and the signature
// has an Ed25519 signature's length: what a batch can check.
func (s *sealed) ed25519Key() (ed25519.PublicKey, bool) {
	if s.key.Type() != cryptopb.KeyType_Ed25519 || len(s.sig) != ed25519.SignatureSize {
		return nil, false
	}
	raw, err := s.key.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, false
	}
	return raw, true
}

// open decodes the offer of an envelope whose signature was checked: the
// signer's key must be the seller's peer ID, and the offer valid at now.
func (s *sealed) open(now time.Time) (*Offer, error) {
	var o Offer
	if err := o.UnmarshalRecord(s.payload); err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	signer, err := peer.IDFromPublicKey(s.key)
	if err != nil {
		return nil, fmt.Errorf("%w: signer key: %v", ErrMalformed, err)
	}
	if signer != o.Seller {
		return nil, fmt.Errorf("%w: signed by %s, seller %s", ErrWrongKey, signer, o.Seller)
	}
	if err := o.Validate(now); err != nil {
		return nil, err
	}
	return &o, nil
}

// openBatch opens envs as Open opens each, and returns for each its offer
// or why it was refused; it checks the Ed25519 signatures among them in
// one batch (about half the work of checking them one by one, at 20). If
// the batch fails, each is checked alone, so a bad signature costs only
// time and is refused with Open's error.
//
// A batch accepts what ZIP 215 accepts, which differs from
// crypto/ed25519's rule only for signatures that use non-canonical or
// small-order points: ones the holder of the key itself, or a key no one
// holds (of small order), can make, never one forged for an honest
// seller's key. Either way an accepted envelope was signed with the key
// its seller's peer ID names.
func openBatch(envs [][]byte, now time.Time) ([]*Offer, []error) {
	offers := make([]*Offer, len(envs))
	errs := make([]error, len(envs))
	seals := make([]*sealed, len(envs))
	inBatch := make([]bool, len(envs))
	batch := ed25519consensus.NewBatchVerifier()
	n := 0
	for i, env := range envs {
		s, err := unseal(env)
		if err != nil {
			errs[i] = err
			continue
		}
		seals[i] = s
		if pub, ok := s.ed25519Key(); ok {
			batch.Add(pub, s.signed, s.sig)
			inBatch[i] = true
			n++
		}
	}
	batchOK := n > 1 && batch.Verify()
	for i, s := range seals {
		if s == nil {
			continue
		}
		if !batchOK || !inBatch[i] {
			if errs[i] = s.verify(); errs[i] != nil {
				continue
			}
		}
		offers[i], errs[i] = s.open(now)
	}
	return offers, errs
}
