package reputation

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// EnvelopeDomain is the signature domain of every reputation record, so a
// signature made for an offer or a receipt can never be replayed as one.
const EnvelopeDomain = "blackbox-reputation"

// RecordVersion is the version of the records this code writes and reads.
const RecordVersion = 1

var (
	attestationCodec = []byte("/blackbox/attestation/1")
	trustCodec       = []byte("/blackbox/trust/1")
)

func init() {
	record.RegisterType(&Attestation{})
	record.RegisterType(&TrustStatement{})
}

// Attestation is a rater's signed statement about how a contract with a
// peer went. It counts only when ContractEvidence confirms that the contract
// exists between Attester and Subject, that both signed it and that it was
// paid.
type Attestation struct {
	Version    uint32
	ContractID string
	Attester   peer.ID // the signer
	Subject    peer.ID // the peer being rated
	Outcome    Outcome
	// UsagePermille is delivered ÷ promised usage × 1000 (0: not measured).
	UsagePermille uint32
	// PaidSats is what the attester says was paid; the evidence decides.
	PaidSats uint64
	IssuedAt time.Time
	Expires  time.Time
	// Evidence is opaque proof for ContractEvidence (for example the
	// contract envelope both parties signed and the payment-channel update
	// or settlement transaction), so that a third party can check it.
	Evidence []byte
}

var _ record.Record = (*Attestation)(nil)

// Domain implements record.Record.
func (a *Attestation) Domain() string { return EnvelopeDomain }

// Codec implements record.Record.
func (a *Attestation) Codec() []byte { return attestationCodec }

// Limits a decoder enforces regardless of the envelope size cap.
const (
	maxContractIDLen = 128
	maxPeerIDLen     = 64
	maxEvidenceLen   = 60 << 10
)

// Decode errors; each maps to a rejection reason.
var (
	ErrMalformed = errors.New("malformed record")
	ErrOversized = errors.New("record too large")
)

// MarshalRecord implements record.Record with a deterministic protobuf
// encoding (fields in number order, no unknown fields).
func (a *Attestation) MarshalRecord() ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.Version))
	b = appendBytes(b, 2, []byte(a.ContractID))
	b = appendBytes(b, 3, []byte(a.Attester))
	b = appendBytes(b, 4, []byte(a.Subject))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.Outcome))
	b = protowire.AppendTag(b, 6, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.UsagePermille))
	b = protowire.AppendTag(b, 7, protowire.VarintType)
	b = protowire.AppendVarint(b, a.PaidSats)
	b = protowire.AppendTag(b, 8, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.IssuedAt.Unix()))
	b = protowire.AppendTag(b, 9, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.Expires.Unix()))
	if len(a.Evidence) > 0 {
		b = appendBytes(b, 10, a.Evidence)
	}
	return b, nil
}

// UnmarshalRecord implements record.Record. It accepts exactly the fields
// MarshalRecord writes, each at most once, in order, so that one record has
// one encoding.
func (a *Attestation) UnmarshalRecord(data []byte) error {
	*a = Attestation{}
	var issued, expires uint64
	err := decodeFields(data, &attestationSchema, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case 1:
			if v > 1<<16 {
				return fmt.Errorf("version %d", v)
			}
			a.Version = uint32(v)
		case 2:
			if len(bs) == 0 || len(bs) > maxContractIDLen {
				return fmt.Errorf("contract id of %d bytes", len(bs))
			}
			a.ContractID = string(bs)
		case 3, 4:
			id, err := peer.IDFromBytes(bs)
			if err != nil || len(bs) > maxPeerIDLen {
				return fmt.Errorf("peer id: %v", err)
			}
			if num == 3 {
				a.Attester = id
			} else {
				a.Subject = id
			}
		case 5:
			if !Outcome(v).Valid() || Outcome(v).local() {
				return fmt.Errorf("outcome %d", v)
			}
			a.Outcome = Outcome(v)
		case 6:
			if v > 10000 {
				return fmt.Errorf("usage %d‰", v)
			}
			a.UsagePermille = uint32(v)
		case 7:
			a.PaidSats = v
		case 8:
			issued = v
		case 9:
			expires = v
		case 10:
			if len(bs) == 0 || len(bs) > maxEvidenceLen {
				return fmt.Errorf("evidence of %d bytes", len(bs))
			}
			a.Evidence = append([]byte(nil), bs...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if a.Version != RecordVersion {
		return fmt.Errorf("%w: attestation version %d", ErrMalformed, a.Version)
	}
	if a.ContractID == "" || a.Attester == "" || a.Subject == "" || a.Outcome == 0 {
		return fmt.Errorf("%w: attestation missing fields", ErrMalformed)
	}
	if issued > 1<<40 || expires > 1<<40 || expires < issued {
		return fmt.Errorf("%w: attestation times %d..%d", ErrMalformed, issued, expires)
	}
	a.IssuedAt = time.Unix(int64(issued), 0).UTC()
	a.Expires = time.Unix(int64(expires), 0).UTC()
	return nil
}

// TrustStatement is a peer's signed statement that it trusts Subject with
// Weight (0..1). Statements from peers this node trusts let trust propagate
// a bounded number of hops; a later statement replaces an earlier one, and
// weight 0 withdraws trust.
type TrustStatement struct {
	Version  uint32
	Truster  peer.ID
	Subject  peer.ID
	WeightPM uint32 // weight × 1000
	IssuedAt time.Time
}

var _ record.Record = (*TrustStatement)(nil)

// Domain implements record.Record.
func (t *TrustStatement) Domain() string { return EnvelopeDomain }

// Codec implements record.Record.
func (t *TrustStatement) Codec() []byte { return trustCodec }

// MarshalRecord implements record.Record.
func (t *TrustStatement) MarshalRecord() ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t.Version))
	b = appendBytes(b, 2, []byte(t.Truster))
	b = appendBytes(b, 3, []byte(t.Subject))
	b = protowire.AppendTag(b, 4, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t.WeightPM))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t.IssuedAt.Unix()))
	return b, nil
}

// UnmarshalRecord implements record.Record.
func (t *TrustStatement) UnmarshalRecord(data []byte) error {
	*t = TrustStatement{}
	var issued uint64
	err := decodeFields(data, &trustSchema, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case 1:
			if v > 1<<16 {
				return fmt.Errorf("version %d", v)
			}
			t.Version = uint32(v)
		case 2, 3:
			id, err := peer.IDFromBytes(bs)
			if err != nil || len(bs) > maxPeerIDLen {
				return fmt.Errorf("peer id: %v", err)
			}
			if num == 2 {
				t.Truster = id
			} else {
				t.Subject = id
			}
		case 4:
			if v > 1000 {
				return fmt.Errorf("weight %d‰", v)
			}
			t.WeightPM = uint32(v)
		case 5:
			issued = v
		}
		return nil
	})
	if err != nil {
		return err
	}
	if t.Version != RecordVersion || t.Truster == "" || t.Subject == "" || issued > 1<<40 {
		return fmt.Errorf("%w: trust statement fields", ErrMalformed)
	}
	t.IssuedAt = time.Unix(int64(issued), 0).UTC()
	return nil
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

var (
	varintField = wire.Spec{Kind: wire.Varint}
	bytesField  = wire.Spec{Kind: wire.Bytes}
)

// The records' schemas: fields in increasing order, each at most once, so
// that one record has one encoding. Zero values are written, and read.
var (
	attestationSchema = wire.Schema{Ordered: true, Fields: []wire.Spec{
		1: varintField, 2: bytesField, 3: bytesField, 4: bytesField, 5: varintField,
		6: varintField, 7: varintField, 8: varintField, 9: varintField, 10: bytesField,
	}}
	trustSchema = wire.Schema{Ordered: true, Fields: []wire.Spec{
		1: varintField, 2: bytesField, 3: bytesField, 4: varintField, 5: varintField,
	}}
	// A Store's observations and trust edges: ratios and weights are a
	// float64's bits.
	// Observations are this node's own records; Open so that a later
	// version's field (as 6, the reason, was) does not stop an earlier
	// version from loading the book.
	observationSchema = wire.Schema{Ordered: true, Open: true, Fields: []wire.Spec{
		1: bytesField, 2: bytesField, 3: varintField, 4: {Kind: wire.Fixed64}, 5: varintField, 6: bytesField,
	}}
	edgeSchema = wire.Schema{Ordered: true, Fields: []wire.Spec{
		1: bytesField, 2: bytesField, 3: {Kind: wire.Fixed64}, 4: varintField,
	}}
)

// decodeFields walks a protobuf message strictly by s, calling fn for
// each field. Every failure is ErrMalformed.
func decodeFields(data []byte, s *wire.Schema, fn func(protowire.Number, uint64, []byte) error) error {
	err := s.Walk(data, func(f wire.Field) error {
		if err := fn(f.Num, f.V, f.B); err != nil {
			return fmt.Errorf("%w: field %d: %v", ErrMalformed, f.Num, err)
		}
		return nil
	})
	return wire.Wrap(err, ErrMalformed, ErrOversized)
}

// SealAttestation signs a with key; the attester must be the key's peer.
func SealAttestation(a *Attestation, key crypto.PrivKey) ([]byte, error) {
	return seal(a, key)
}

// SealTrustStatement signs t with key; the truster must be the key's peer.
func SealTrustStatement(t *TrustStatement, key crypto.PrivKey) ([]byte, error) {
	return seal(t, key)
}

func seal(r record.Record, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(r, key)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", r.Codec(), err)
	}
	return env.Marshal()
}

// DecodeRecord checks size, envelope signature and domain, and that the
// signer is the record's author (Attester or Truster). It returns an
// *Attestation or a *TrustStatement. Errors wrap ErrOversized, ErrMalformed
// or ErrForged.
func DecodeRecord(data []byte, maxBytes int) (record.Record, error) {
	if len(data) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrOversized, len(data), maxBytes)
	}
	env, rec, err := record.ConsumeEnvelope(data, EnvelopeDomain)
	if err != nil {
		if errors.Is(err, record.ErrInvalidSignature) {
			return nil, fmt.Errorf("%w: %v", ErrForged, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: signer key: %v", ErrMalformed, err)
	}
	var author peer.ID
	switch r := rec.(type) {
	case *Attestation:
		author = r.Attester
	case *TrustStatement:
		author = r.Truster
	default:
		return nil, fmt.Errorf("%w: unexpected record %T", ErrMalformed, rec)
	}
	if signer != author {
		return nil, fmt.Errorf("%w: signed by %s, claims %s", ErrForged, signer, author)
	}
	return rec, nil
}

// ErrForged marks a record whose signature does not verify or whose signer
// is not its claimed author.
var ErrForged = errors.New("forged record")
