// Package offer owns what a seller puts on the market and how buyers find it:
// the Offer record, its deterministic encoding and signed envelope, pricing,
// the DHT record validator, resource-class provider keys, the
// /blackbox/offer/1.0.0 stream protocol, publishing and discovery.
//
// An offer crosses the network only as a go-libp2p signed envelope whose
// payload is the protobuf encoding of Offer written field by field in number
// order, so the signature is over exact bytes. Every decoder caps the input
// size before it parses anything.
package offer

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Limits on what an offer may carry. They bound the work a peer can make a
// node do with one record.
const (
	// MaxEnvelopeSize caps a signed offer envelope on the wire and in the DHT.
	MaxEnvelopeSize = 8 << 10
	// MaxPayloadSize caps the encoded Offer inside the envelope.
	MaxPayloadSize = 4 << 10
	// MaxAddrs caps the number of listen addresses in an offer.
	MaxAddrs = 16
	// MaxRuntimes caps the number of runtimes an offer lists.
	MaxRuntimes = 4
	// MaxRegionLen caps the region string.
	MaxRegionLen = 32
	// MaxTTL is the longest an offer may stay valid; a short expiry bounds how
	// long a stale offer can be replayed.
	MaxTTL = 2 * time.Hour
	// Version is the Offer format this code writes and accepts.
	Version = 1
)

// Domain and codec of the signed offer envelope.
const (
	EnvelopeDomain = "blackbox-offer"
)

// EnvelopeCodec is the envelope payload type of an offer.
var EnvelopeCodec = []byte("/blackbox/offer-record/1")

// Errors a caller may branch on. Every validation failure wraps ErrInvalid.
var (
	ErrInvalid   = errors.New("invalid offer")
	ErrExpired   = fmt.Errorf("%w: expired", ErrInvalid)
	ErrTooLarge  = fmt.Errorf("%w: too large", ErrInvalid)
	ErrWrongKey  = fmt.Errorf("%w: not signed by the seller's key", ErrInvalid)
	ErrStaleSeq  = fmt.Errorf("%w: sequence older than one already seen", ErrInvalid)
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalid)
	// ErrUnsupported: the offer carries a critical field of a newer
	// version (wire.CriticalMin), one a buyer must not ignore.
	ErrUnsupported = fmt.Errorf("%w: unsupported (from a newer blackbox)", ErrInvalid)
)

// Resources is an amount of compute: CPU in millicores, memory and disk in
// bytes, bandwidth in bits per second.
type Resources struct {
	CPUMillis    uint64 `json:"cpu_millis"`
	MemoryBytes  uint64 `json:"memory_bytes"`
	DiskBytes    uint64 `json:"disk_bytes"`
	BandwidthBps uint64 `json:"bandwidth_bps"`
}

// Prices are in millisatoshis, so that cheap resources (a GiB-hour of disk
// is a fraction of a satoshi) can be priced; bills round up to whole sats.
type Prices struct {
	CoreHour    uint64 `json:"msat_per_core_hour"`
	MemGiBHour  uint64 `json:"msat_per_gib_hour_memory"`
	DiskGiBHour uint64 `json:"msat_per_gib_hour_disk"`
	// EgressGiB is per GiB moved between seller and buyer, both ways: the
	// outputs and logs the seller sends, and the inputs and image (when
	// really sent, not when the seller holds it) it receives; billed at the
	// end of a job in whole sats rounded down (pkg/contract/egress.go).
	EgressGiB uint64 `json:"msat_per_gib_egress"`
	StartFee  uint64 `json:"start_fee_msat"`
}

// Offer is a seller's signed statement of what it sells, at what price, until
// when.
type Offer struct {
	Version         uint32         `json:"version"`
	Seller          peer.ID        `json:"seller"`
	Addrs           []ma.Multiaddr `json:"addrs"`
	Resources       Resources      `json:"resources"`
	Prices          Prices         `json:"prices"`
	MinDuration     time.Duration  `json:"min_duration"`
	MaxDuration     time.Duration  `json:"max_duration"`
	BillingInterval time.Duration  `json:"billing_interval"`
	Runtimes        []string       `json:"runtimes"`
	Region          string         `json:"region,omitempty"`
	PaymentKey      []byte         `json:"payment_key,omitempty"`
	Seq             uint64         `json:"seq"`
	Issued          time.Time      `json:"issued"`
	Expiry          time.Time      `json:"expiry"`
	// Network is the Bitcoin network the seller is paid on (mainnet,
	// testnet, testnet4, signet, regtest); empty from sellers before it
	// was said.
	Network string `json:"network,omitempty"`
}

var _ record.Record = (*Offer)(nil)

// Domain implements record.Record.
func (o *Offer) Domain() string { return EnvelopeDomain }

// Codec implements record.Record.
func (o *Offer) Codec() []byte { return EnvelopeCodec }

// field numbers of the encoding; never renumbered.
const (
	fVersion     = 1
	fSeller      = 2
	fAddrs       = 3
	fCPU         = 4
	fMemory      = 5
	fDisk        = 6
	fBandwidth   = 7
	fCoreHour    = 8
	fMemGiBHour  = 9
	fDiskGiBHour = 10
	fEgressGiB   = 11
	fStartFee    = 12
	fMinDur      = 13
	fMaxDur      = 14
	fInterval    = 15
	fRuntimes    = 16
	fRegion      = 17
	fPaymentKey  = 18
	fSeq         = 19
	fIssued      = 20
	fExpiry      = 21
	fNetwork     = 22
)

// MaxNetworkLen bounds Offer.Network.
const MaxNetworkLen = 16

// MarshalRecord implements record.Record: protobuf wire format, fields in
// number order, zero scalars omitted, so equal offers encode to equal bytes.
func (o *Offer) MarshalRecord() ([]byte, error) {
	e := wire.Encoder{B: make([]byte, 0, 256)}
	u, by := e.Uint, e.Bytes
	u(fVersion, uint64(o.Version))
	by(fSeller, []byte(o.Seller))
	for _, a := range o.Addrs {
		if a == nil {
			continue
		}
		by(fAddrs, a.Bytes())
	}
	u(fCPU, o.Resources.CPUMillis)
	u(fMemory, o.Resources.MemoryBytes)
	u(fDisk, o.Resources.DiskBytes)
	u(fBandwidth, o.Resources.BandwidthBps)
	u(fCoreHour, o.Prices.CoreHour)
	u(fMemGiBHour, o.Prices.MemGiBHour)
	u(fDiskGiBHour, o.Prices.DiskGiBHour)
	u(fEgressGiB, o.Prices.EgressGiB)
	u(fStartFee, o.Prices.StartFee)
	u(fMinDur, durSeconds(o.MinDuration))
	u(fMaxDur, durSeconds(o.MaxDuration))
	u(fInterval, durSeconds(o.BillingInterval))
	for _, r := range o.Runtimes {
		by(fRuntimes, []byte(r))
	}
	by(fRegion, []byte(o.Region))
	by(fPaymentKey, o.PaymentKey)
	u(fSeq, o.Seq)
	u(fIssued, unixSeconds(o.Issued))
	u(fExpiry, unixSeconds(o.Expiry))
	by(fNetwork, []byte(o.Network))
	b := e.B
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("encode offer: %w (%d bytes > %d)", ErrTooLarge, len(b), MaxPayloadSize)
	}
	return b, nil
}

func durSeconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d / time.Second)
}

func unixSeconds(t time.Time) uint64 {
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return uint64(t.Unix())
}

var (
	varintField = wire.Spec{Kind: wire.Varint}
	bytesField  = wire.Spec{Kind: wire.Bytes}
)

// offerSchema: the field numbers above, addresses and runtimes repeated.
//
// It is Open: a field a newer version added is skipped (the signature is
// over the bytes received, so it still verifies), so a buyer one version
// older still finds a newer seller. A decoded offer is never re-encoded
// to be signed or hashed, so the skipped fields are not kept.
var offerSchema = wire.Schema{Max: MaxPayloadSize, Open: true, Fields: []wire.Spec{
	fVersion: varintField, fSeller: bytesField, fAddrs: {Kind: wire.Bytes, Repeated: true},
	fCPU: varintField, fMemory: varintField, fDisk: varintField, fBandwidth: varintField,
	fCoreHour: varintField, fMemGiBHour: varintField, fDiskGiBHour: varintField, fEgressGiB: varintField,
	fStartFee: varintField, fMinDur: varintField, fMaxDur: varintField, fInterval: varintField,
	fRuntimes: {Kind: wire.Bytes, Repeated: true}, fRegion: bytesField, fPaymentKey: bytesField,
	fSeq: varintField, fIssued: varintField, fExpiry: varintField, fNetwork: bytesField,
}}

// UnmarshalRecord implements record.Record. It is strict about what it
// knows: oversized input, wrong wire types, repeated scalars and values out
// of range are errors, never panics; unknown fields are skipped, except
// critical ones (ErrUnsupported).
func (o *Offer) UnmarshalRecord(b []byte) error {
	*o = Offer{}
	err := offerSchema.Walk(b, func(f wire.Field) error {
		if f.Unknown != nil {
			return nil
		}
		if offerSchema.Fields[f.Num].Kind == wire.Bytes {
			return o.setBytes(f.Num, f.B)
		}
		return o.setVarint(f.Num, f.V)
	})
	if errors.Is(err, wire.ErrUnsupported) {
		return fmt.Errorf("decode offer: %w: %w", ErrUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("decode offer: %w", wire.Wrap(err, ErrMalformed, ErrTooLarge))
	}
	return nil
}

func (o *Offer) setBytes(num protowire.Number, v []byte) error {
	switch num {
	case fSeller:
		id, err := peer.IDFromBytes(v)
		if err != nil {
			return fmt.Errorf("%w: seller: %v", ErrMalformed, err)
		}
		o.Seller = id
	case fAddrs:
		if len(o.Addrs) >= MaxAddrs {
			return fmt.Errorf("%w: more than %d addresses", ErrMalformed, MaxAddrs)
		}
		a, err := ma.NewMultiaddrBytes(v)
		if err != nil {
			return fmt.Errorf("%w: address: %v", ErrMalformed, err)
		}
		o.Addrs = append(o.Addrs, a)
	case fRuntimes:
		if len(o.Runtimes) >= MaxRuntimes {
			return fmt.Errorf("%w: more than %d runtimes", ErrMalformed, MaxRuntimes)
		}
		if len(v) == 0 || len(v) > 32 || !utf8.Valid(v) {
			return fmt.Errorf("%w: runtime name", ErrMalformed)
		}
		o.Runtimes = append(o.Runtimes, string(v))
	case fRegion:
		if len(v) > MaxRegionLen || !utf8.Valid(v) {
			return fmt.Errorf("%w: region", ErrMalformed)
		}
		o.Region = string(v)
	case fNetwork:
		if len(v) == 0 || len(v) > MaxNetworkLen || !utf8.Valid(v) {
			return fmt.Errorf("%w: network", ErrMalformed)
		}
		o.Network = string(v)
	case fPaymentKey:
		if len(v) != 33 {
			return fmt.Errorf("%w: payment key must be a 33-byte compressed public key", ErrMalformed)
		}
		o.PaymentKey = append([]byte(nil), v...)
	}
	return nil
}

// maxSeconds keeps durations and times far from overflow.
const maxSeconds = 1 << 40

func (o *Offer) setVarint(num protowire.Number, v uint64) error {
	sec := func() (time.Duration, error) {
		if v > maxSeconds/1000 {
			return 0, fmt.Errorf("%w: field %d out of range", ErrMalformed, num)
		}
		return time.Duration(v) * time.Second, nil
	}
	var err error
	switch num {
	case fVersion:
		if v > math.MaxUint32 {
			return fmt.Errorf("%w: version out of range", ErrMalformed)
		}
		o.Version = uint32(v)
	case fCPU:
		o.Resources.CPUMillis = v
	case fMemory:
		o.Resources.MemoryBytes = v
	case fDisk:
		o.Resources.DiskBytes = v
	case fBandwidth:
		o.Resources.BandwidthBps = v
	case fCoreHour:
		o.Prices.CoreHour = v
	case fMemGiBHour:
		o.Prices.MemGiBHour = v
	case fDiskGiBHour:
		o.Prices.DiskGiBHour = v
	case fEgressGiB:
		o.Prices.EgressGiB = v
	case fStartFee:
		o.Prices.StartFee = v
	case fMinDur:
		o.MinDuration, err = sec()
	case fMaxDur:
		o.MaxDuration, err = sec()
	case fInterval:
		o.BillingInterval, err = sec()
	case fSeq:
		o.Seq = v
	case fIssued, fExpiry:
		if v > maxSeconds {
			return fmt.Errorf("%w: field %d out of range", ErrMalformed, num)
		}
		t := time.Unix(int64(v), 0).UTC()
		if num == fIssued {
			o.Issued = t
		} else {
			o.Expiry = t
		}
	}
	return err
}

// Validate checks an offer's contents at time now: the rules every node
// applies to every offer it stores, serves or returns.
func (o *Offer) Validate(now time.Time) error {
	switch {
	case o.Version != Version:
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, o.Version, Version)
	case o.Seller == "":
		return fmt.Errorf("%w: no seller", ErrInvalid)
	case o.Seq == 0:
		return fmt.Errorf("%w: sequence must be positive", ErrInvalid)
	case o.Expiry.IsZero() || o.Issued.IsZero():
		return fmt.Errorf("%w: issue and expiry times are required", ErrInvalid)
	case !now.Before(o.Expiry):
		return fmt.Errorf("%w at %s", ErrExpired, o.Expiry.Format(time.RFC3339))
	case o.Expiry.Sub(o.Issued) > MaxTTL:
		return fmt.Errorf("%w: lifetime %s exceeds %s", ErrInvalid, o.Expiry.Sub(o.Issued), MaxTTL)
	case o.Issued.After(now.Add(5 * time.Minute)):
		return fmt.Errorf("%w: issued in the future", ErrInvalid)
	case o.MaxDuration != 0 && o.MinDuration > o.MaxDuration:
		return fmt.Errorf("%w: min duration above max duration", ErrInvalid)
	}
	return nil
}

// Sign seals the offer into a signed envelope with the seller's identity key
// and returns the envelope's wire bytes. The key must be the seller's.
func Sign(o *Offer, key crypto.PrivKey) ([]byte, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("sign offer: %w", err)
	}
	if id != o.Seller {
		return nil, fmt.Errorf("sign offer: key of %s cannot sign for seller %s", id, o.Seller)
	}
	env, err := record.Seal(o, key)
	if err != nil {
		return nil, fmt.Errorf("sign offer: %w", err)
	}
	b, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sign offer: %w", err)
	}
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("sign offer: %w", ErrTooLarge)
	}
	return b, nil
}

// Open verifies a signed offer envelope and returns the offer: size capped,
// signature valid for the envelope's key, that key is the seller's peer ID,
// and the contents valid at now.
func Open(data []byte, now time.Time) (*Offer, error) {
	s, err := unseal(data)
	if err != nil {
		return nil, err
	}
	if err := s.verify(); err != nil {
		return nil, err
	}
	return s.open(now)
}

// gib is one GiB in bytes.
const gib = 1 << 30

// HourlyCost is what the given resources cost per hour at this offer's prices,
// in satoshis (fractional: used for ranking and caps, not for billing).
func (o *Offer) HourlyCost(r Resources) float64 {
	msat := float64(r.CPUMillis)/1000*float64(o.Prices.CoreHour) +
		float64(r.MemoryBytes)/gib*float64(o.Prices.MemGiBHour) +
		float64(r.DiskBytes)/gib*float64(o.Prices.DiskGiBHour)
	return msat / 1000
}
