package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Version is the record format this code writes and accepts.
const Version = 1

// Size caps. They bound the work one record can make a node do.
const (
	MaxProposalSize   = 32 << 10 // signed proposal envelope
	MaxDecisionSize   = 4 << 10  // signed decision envelope
	MaxReceiptSize    = 32 << 10 // signed receipt envelope
	MaxContractSize   = MaxProposalSize + MaxDecisionSize + 64
	maxRequestPayload = 24 << 10
	maxArgs           = 64
	maxArgLen         = 4096
	maxInputs         = 32
	maxOutputs        = 256
	maxNameLen        = 255
	maxImageLen       = 512
	maxTermsLen       = 1024
	maxMessageLen     = 256
	// MaxRecordTTL is the longest a proposal or decision stays valid: a
	// short expiry bounds how long the seller must remember proposal IDs.
	MaxRecordTTL = 10 * time.Minute
	// MaxDuration is the longest contract.
	MaxDuration = 24 * time.Hour
	// MinInterval is the shortest billing interval accepted on the wire.
	MinInterval = 10 * time.Millisecond
	// clockSkew is how far in the future a record may claim to be issued.
	clockSkew = 5 * time.Minute
)

// Envelope domains and codecs.
const (
	ProposalDomain = "blackbox-proposal"
	DecisionDomain = "blackbox-decision"
	ReceiptDomain  = "blackbox-receipt"
)

var (
	proposalCodec = []byte("/blackbox/proposal-record/1")
	decisionCodec = []byte("/blackbox/decision-record/1")
	receiptCodec  = []byte("/blackbox/receipt-record/1")
)

// Input is one input file the buyer ships with the job, named by the sha256
// of its content.
type Input struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"` // "sha256:<hex>"
	Size   uint64 `json:"size"`
	// Unknown holds the fields a newer version wrote that this one does
	// not know, kept as they came so that re-encoding gives the signed
	// bytes (and so the contract ID) back.
	Unknown wire.RawFields `json:"unknown_fields,omitempty"`
}

// Request is what a buyer wants run: the image (a "sha256:<hex>" digest of
// an image tarball the buyer ships, or a reference the seller pulls), the
// command, environment, input files, resources, how long, the most it will
// pay for the whole contract (sats), the least reputation it accepts (0..1),
// a preferred region and a deadline by which the job must be done.
type Request struct {
	Image         string          `json:"image"`
	ImageSize     uint64          `json:"image_size,omitempty"`
	Command       []string        `json:"command"`
	Env           []string        `json:"env,omitempty"`
	Inputs        []Input         `json:"inputs,omitempty"`
	Resources     offer.Resources `json:"resources"`
	Duration      time.Duration   `json:"-"` // JSON: duration_seconds (jsonnames.go)
	MaxPrice      uint64          `json:"max_price_sat"`
	MinReputation float64         `json:"min_reputation,omitempty"`
	Region        string          `json:"region,omitempty"`
	Deadline      time.Time       `json:"deadline,omitzero"`
	// Runtime, if set, must be among the offer's runtimes ("runc", "runsc").
	Runtime string `json:"runtime,omitempty"`
	// Deterministic says the job produces the same stdout and out.tar on
	// every seller, so the buyer may spot-check it: run it again on one or
	// two other sellers (at the buyer's cost) and compare output digests.
	Deterministic bool `json:"deterministic,omitempty"`
	// Escrow, if set, is the peer ID of the arbiter of an escrowed job:
	// paid on delivery from a 2-of-3 escrow, not per interval
	// (escrowjob.go).
	Escrow string `json:"escrow_arbiter,omitempty"`
	// Service, if set, makes the contract a service's (service.go): the
	// job runs, restarted when it exits, for the contract's length, and
	// its port is reached through the forward protocol.
	Service *Service `json:"service,omitempty"`
	// Limit, if set, ends the buyer's offer lookup once it holds this
	// many matching offers (the first found, not the cheapest of the
	// network): a faster search in a large market. The buyer's own
	// setting, never sent to a seller (not in the proposal's encoding).
	Limit int `json:"limit,omitempty"`
	// Unknown: a newer version's fields, kept as they came (Input.Unknown).
	Unknown wire.RawFields `json:"unknown_fields,omitempty"`
}

// MaxLimit bounds Request.Limit.
const MaxLimit = 10_000

// ImageIsDigest reports whether the request ships an image tarball named by
// its digest (rather than naming an image for the seller to pull).
func (r *Request) ImageIsDigest() bool { return isDigest(r.Image) }

func isDigest(s string) bool {
	if !strings.HasPrefix(s, "sha256:") || len(s) != 7+64 {
		return false
	}
	_, err := hex.DecodeString(s[7:])
	return err == nil && strings.ToLower(s) == s
}

// Validate checks a request's contents.
func (r *Request) Validate() error {
	switch {
	case r.Image == "" || len(r.Image) > maxImageLen:
		return fmt.Errorf("%w: image missing or too long", ErrInvalid)
	case strings.HasPrefix(r.Image, "sha256:") && !isDigest(r.Image):
		return fmt.Errorf("%w: image digest %q", ErrInvalid, r.Image)
	case r.Resources.CPUMillis == 0 || r.Resources.MemoryBytes == 0:
		return fmt.Errorf("%w: cpu and memory are required", ErrInvalid)
	case r.Duration <= 0 || r.Duration > MaxDuration:
		return fmt.Errorf("%w: duration %s outside (0, %s]", ErrInvalid, r.Duration, MaxDuration)
	case r.MinReputation < 0 || r.MinReputation > 1:
		return fmt.Errorf("%w: min reputation %v outside [0,1]", ErrInvalid, r.MinReputation)
	case r.Limit < 0 || r.Limit > MaxLimit:
		return fmt.Errorf("%w: offer limit %d outside [0, %d]", ErrInvalid, r.Limit, MaxLimit)
	case len(r.Command) > maxArgs || len(r.Env) > maxArgs || len(r.Inputs) > maxInputs:
		return fmt.Errorf("%w: too many arguments, variables or inputs", ErrInvalid)
	case len(r.Region) > offer.MaxRegionLen:
		return fmt.Errorf("%w: region too long", ErrInvalid)
	case r.Service != nil && r.Deterministic:
		return fmt.Errorf("%w: a service is not a deterministic job", ErrInvalid)
	}
	if r.Service != nil {
		if err := r.Service.validateFor(r.Runtime); err != nil {
			return err
		}
	}
	if r.Escrow != "" {
		if _, err := peer.Decode(r.Escrow); err != nil {
			return fmt.Errorf("%w: escrow arbiter %q is not a peer ID", ErrInvalid, r.Escrow)
		}
	}
	for _, e := range r.Env {
		if !strings.Contains(e, "=") || strings.HasPrefix(e, "=") {
			return fmt.Errorf("%w: env entry %q is not KEY=VALUE", ErrInvalid, e)
		}
	}
	for _, in := range r.Inputs {
		if in.Name == "" || len(in.Name) > maxNameLen || strings.ContainsAny(in.Name, "/\x00") || in.Name == "." || in.Name == ".." {
			return fmt.Errorf("%w: input name %q", ErrInvalid, in.Name)
		}
		if !isDigest(in.SHA256) {
			return fmt.Errorf("%w: input %s digest %q", ErrInvalid, in.Name, in.SHA256)
		}
	}
	return nil
}

// Request field numbers; never renumbered.
const (
	rqImage = 1 + iota
	rqCommand
	rqEnv
	rqInputs
	rqCPU
	rqMemory
	rqDisk
	rqBandwidth
	rqDuration
	rqMaxPrice
	rqMinRep
	rqRegion
	rqDeadline
	rqImageSize
	rqRuntime
	rqDeterministic
	rqEscrow
	rqService
)

func (r *Request) marshal() []byte {
	var e enc
	e.String(rqImage, r.Image)
	for _, a := range r.Command {
		// An empty argument must survive the round trip: write it anyway.
		e.B = protowire.AppendTag(e.B, rqCommand, protowire.BytesType)
		e.B = protowire.AppendString(e.B, a)
	}
	for _, v := range r.Env {
		e.String(rqEnv, v)
	}
	for _, in := range r.Inputs {
		var ie enc
		ie.String(1, in.Name)
		ie.String(2, in.SHA256)
		ie.Uint(3, in.Size)
		ie.B = append(ie.B, in.Unknown...)
		e.B = protowire.AppendTag(e.B, rqInputs, protowire.BytesType)
		e.B = protowire.AppendBytes(e.B, ie.B)
	}
	e.Uint(rqCPU, r.Resources.CPUMillis)
	e.Uint(rqMemory, r.Resources.MemoryBytes)
	e.Uint(rqDisk, r.Resources.DiskBytes)
	e.Uint(rqBandwidth, r.Resources.BandwidthBps)
	e.d(rqDuration, r.Duration)
	e.Uint(rqMaxPrice, r.MaxPrice)
	e.Uint(rqMinRep, uint64(r.MinReputation*1000+0.5))
	e.String(rqRegion, r.Region)
	e.t(rqDeadline, r.Deadline)
	e.Uint(rqImageSize, r.ImageSize)
	e.String(rqRuntime, r.Runtime)
	if r.Deterministic {
		e.Uint(rqDeterministic, 1)
	}
	e.String(rqEscrow, r.Escrow)
	if r.Service != nil {
		e.Bytes(rqService, r.Service.marshal())
	}
	e.B = append(e.B, r.Unknown...)
	return e.B
}

var requestSchema = wire.Schema{Max: maxRequestPayload, Open: true, Fields: []wire.Spec{
	rqImage: bytesField, rqCommand: repeatedBytes, rqEnv: repeatedBytes, rqInputs: repeatedBytes,
	rqCPU: varintField, rqMemory: varintField, rqDisk: varintField, rqBandwidth: varintField,
	rqDuration: varintField, rqMaxPrice: varintField, rqMinRep: varintField, rqRegion: bytesField,
	rqDeadline: varintField, rqImageSize: varintField, rqRuntime: bytesField, rqDeterministic: varintField, rqEscrow: bytesField,
	rqService: bytesField,
}}

func (r *Request) unmarshal(b []byte) error {
	*r = Request{}
	fs, err := decode("request", &requestSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if r.Unknown.Keep(f) {
			continue
		}
		var err error
		switch f.Num {
		case rqImage:
			r.Image, err = f.Text(maxImageLen)
		case rqCommand, rqEnv:
			var s string
			if s, err = f.Text(maxArgLen); err == nil {
				if f.Num == rqCommand {
					r.Command = append(r.Command, s)
				} else {
					r.Env = append(r.Env, s)
				}
				if len(r.Command) > maxArgs || len(r.Env) > maxArgs {
					err = fmt.Errorf("%w: more than %d arguments", ErrMalformed, maxArgs)
				}
			}
		case rqInputs:
			if len(r.Inputs) >= maxInputs {
				return fmt.Errorf("decode request: %w: more than %d inputs", ErrMalformed, maxInputs)
			}
			var in Input
			if err = in.unmarshal(f.B); err == nil {
				r.Inputs = append(r.Inputs, in)
			}
		case rqCPU:
			r.Resources.CPUMillis = f.V
		case rqMemory:
			r.Resources.MemoryBytes = f.V
		case rqDisk:
			r.Resources.DiskBytes = f.V
		case rqBandwidth:
			r.Resources.BandwidthBps = f.V
		case rqDuration:
			r.Duration, err = msDuration(f)
		case rqMaxPrice:
			r.MaxPrice = f.V
		case rqMinRep:
			if f.V > 1000 {
				err = fmt.Errorf("%w: min reputation out of range", ErrMalformed)
			}
			r.MinReputation = float64(f.V) / 1000
		case rqRegion:
			r.Region, err = f.Text(offer.MaxRegionLen)
		case rqDeadline:
			r.Deadline, err = msTime(f)
		case rqImageSize:
			r.ImageSize = f.V
		case rqRuntime:
			r.Runtime, err = f.Text(32)
		case rqDeterministic:
			// Only true is ever written; anything else is not canonical.
			if f.V != 1 {
				err = fmt.Errorf("%w: deterministic flag %d", ErrMalformed, f.V)
			}
			r.Deterministic = true
		case rqEscrow:
			r.Escrow, err = f.Text(100)
		case rqService:
			r.Service, err = unmarshalService(f.B)
		}
		if err != nil {
			return fmt.Errorf("decode request: %w", wireErr(err))
		}
	}
	return nil
}

// inputSchema is an input's, and an output's: name, digest, size.
var inputSchema = wire.Schema{Max: 1024, Open: true, Fields: []wire.Spec{1: bytesField, 2: bytesField, 3: varintField}}

func (in *Input) unmarshal(b []byte) error {
	fs, err := decode("input", &inputSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if in.Unknown.Keep(f) {
			continue
		}
		switch f.Num {
		case 1:
			in.Name, err = f.Text(maxNameLen)
		case 2:
			in.SHA256, err = f.Text(80)
		case 3:
			in.Size = f.V
		}
		if err != nil {
			return wireErr(err)
		}
	}
	return nil
}

// Proposal is a buyer's signed offer to buy: the request, against which
// offer of the seller (its sequence), the billing terms the buyer read from
// that offer, the buyer's payment public key, and a nonce and an expiry that
// make it single-use.
type Proposal struct {
	Version    uint32        `json:"version"`
	Buyer      peer.ID       `json:"buyer,omitempty"`
	Seller     peer.ID       `json:"seller,omitempty"`
	OfferSeq   uint64        `json:"offer_seq"`
	Request    Request       `json:"request"`
	Interval   time.Duration `json:"-"`                 // JSON: interval_seconds (jsonnames.go)
	Price      uint64        `json:"msat_per_interval"` // per billing interval
	StartFee   uint64        `json:"start_fee_msat"`
	PaymentKey []byte        `json:"payment_key"` // 33-byte compressed secp256k1
	Nonce      []byte        `json:"nonce"`
	Issued     time.Time     `json:"issued"`
	Expiry     time.Time     `json:"expiry"`
	// Network is the Bitcoin network the buyer pays on (empty from
	// buyers before it was said).
	Network string `json:"network,omitempty"`
	// Unknown: a newer version's fields, kept as they came (Input.Unknown),
	// so that ID() here is the buyer's.
	Unknown wire.RawFields `json:"unknown_fields,omitempty"`
}

var _ record.Record = (*Proposal)(nil)

// Domain implements record.Record.
func (p *Proposal) Domain() string { return ProposalDomain }

// Codec implements record.Record.
func (p *Proposal) Codec() []byte { return proposalCodec }

const (
	ppVersion = 1 + iota
	ppBuyer
	ppSeller
	ppOfferSeq
	ppRequest
	ppInterval
	ppPrice
	ppStartFee
	ppPaymentKey
	ppNonce
	ppIssued
	ppExpiry
	ppNetwork
)

// MarshalRecord implements record.Record.
func (p *Proposal) MarshalRecord() ([]byte, error) {
	var e enc
	e.Uint(ppVersion, uint64(p.Version))
	e.String(ppBuyer, string(p.Buyer))
	e.String(ppSeller, string(p.Seller))
	e.Uint(ppOfferSeq, p.OfferSeq)
	e.Bytes(ppRequest, p.Request.marshal())
	e.d(ppInterval, p.Interval)
	e.Uint(ppPrice, p.Price)
	e.Uint(ppStartFee, p.StartFee)
	e.Bytes(ppPaymentKey, p.PaymentKey)
	e.Bytes(ppNonce, p.Nonce)
	e.t(ppIssued, p.Issued)
	e.t(ppExpiry, p.Expiry)
	e.String(ppNetwork, p.Network)
	e.B = append(e.B, p.Unknown...)
	if len(e.B) > MaxProposalSize-1024 {
		return nil, fmt.Errorf("encode proposal: %w", ErrTooLarge)
	}
	return e.B, nil
}

var proposalSchema = wire.Schema{Max: MaxProposalSize - 1024, Open: true, Fields: []wire.Spec{
	ppVersion: varintField, ppBuyer: bytesField, ppSeller: bytesField, ppOfferSeq: varintField,
	ppRequest: bytesField, ppInterval: varintField, ppPrice: varintField, ppStartFee: varintField,
	ppPaymentKey: bytesField, ppNonce: bytesField, ppIssued: varintField, ppExpiry: varintField,
	ppNetwork: bytesField,
}}

// UnmarshalRecord implements record.Record, strictly.
func (p *Proposal) UnmarshalRecord(b []byte) error {
	*p = Proposal{}
	fs, err := decode("proposal", &proposalSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if p.Unknown.Keep(f) {
			continue
		}
		var err error
		switch f.Num {
		case ppVersion:
			p.Version, err = f.Uint32()
		case ppBuyer, ppSeller:
			var id peer.ID
			if id, err = peer.IDFromBytes(f.B); err != nil {
				err = fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
			} else if f.Num == ppBuyer {
				p.Buyer = id
			} else {
				p.Seller = id
			}
		case ppOfferSeq:
			p.OfferSeq = f.V
		case ppRequest:
			err = p.Request.unmarshal(f.B)
		case ppInterval:
			p.Interval, err = msDuration(f)
		case ppPrice:
			p.Price = f.V
		case ppStartFee:
			p.StartFee = f.V
		case ppPaymentKey:
			if len(f.B) != 33 {
				err = fmt.Errorf("%w: payment key must be 33 bytes", ErrMalformed)
			}
			p.PaymentKey = append([]byte(nil), f.B...)
		case ppNonce:
			if len(f.B) < 16 || len(f.B) > 32 {
				err = fmt.Errorf("%w: nonce must be 16 to 32 bytes", ErrMalformed)
			}
			p.Nonce = append([]byte(nil), f.B...)
		case ppIssued:
			p.Issued, err = msTime(f)
		case ppExpiry:
			p.Expiry, err = msTime(f)
		case ppNetwork:
			if len(f.B) == 0 || len(f.B) > 16 || !utf8.Valid(f.B) {
				err = fmt.Errorf("%w: network", ErrMalformed)
			}
			p.Network = string(f.B)
		}
		if err != nil {
			return fmt.Errorf("decode proposal: %w", wireErr(err))
		}
	}
	return nil
}

// ID is the proposal's identity and, once accepted, the contract's: the hex
// sha256 of its deterministic encoding.
func (p *Proposal) ID() string {
	b, err := p.MarshalRecord()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Validate checks a proposal at time now.
func (p *Proposal) Validate(now time.Time) error {
	switch {
	case p.Version != Version:
		return fmt.Errorf("%w: proposal version %d, want %d", ErrInvalid, p.Version, Version)
	case p.Buyer == "" || p.Seller == "":
		return fmt.Errorf("%w: buyer and seller are required", ErrInvalid)
	case len(p.Nonce) < 16:
		return fmt.Errorf("%w: nonce required", ErrInvalid)
	case len(p.PaymentKey) != 33:
		return fmt.Errorf("%w: payment key required", ErrInvalid)
	case p.Interval < MinInterval:
		return fmt.Errorf("%w: billing interval %s below %s", ErrInvalid, p.Interval, MinInterval)
	}
	if err := checkTimes(p.Issued, p.Expiry, now); err != nil {
		return fmt.Errorf("proposal: %w", err)
	}
	return p.Request.Validate()
}

// Intervals is how many billing intervals the contract lasts (rounded up).
func (p *Proposal) Intervals() uint64 {
	return uint64((p.Request.Duration + p.Interval - 1) / p.Interval)
}

// Owed is what the buyer owes, in sats (rounded up), once n intervals have
// started: the start fee plus n intervals at the agreed price.
func (p *Proposal) Owed(n uint64) int64 {
	msat := p.StartFee + n*p.Price
	return int64((msat + 999) / 1000)
}

// Total is what the whole contract costs in sats.
func (p *Proposal) Total() int64 { return p.Owed(p.Intervals()) }

func checkTimes(issued, expiry, now time.Time) error {
	switch {
	case issued.IsZero() || expiry.IsZero():
		return fmt.Errorf("%w: issue and expiry times are required", ErrInvalid)
	case !now.Before(expiry):
		return fmt.Errorf("%w at %s", ErrExpired, expiry.Format(time.RFC3339))
	case expiry.Sub(issued) > MaxRecordTTL:
		return fmt.Errorf("%w: lifetime %s exceeds %s", ErrInvalid, expiry.Sub(issued), MaxRecordTTL)
	case issued.After(now.Add(clockSkew)):
		return fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	return nil
}

// Verdict is a seller's answer to a proposal.
type Verdict uint8

// Verdicts; numbers are on the wire and never renumbered.
const (
	Accept  Verdict = 1
	Counter Verdict = 2
	Reject  Verdict = 3
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Counter:
		return "counter"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Reason is the machine-readable reason of a counter or a rejection.
type Reason string

// Reasons.
const (
	ReasonNone      Reason = ""
	ReasonCapacity  Reason = "capacity"
	ReasonPrice     Reason = "price"
	ReasonDuration  Reason = "duration"
	ReasonRuntime   Reason = "runtime"
	ReasonExpired   Reason = "expired"
	ReasonMalformed Reason = "malformed"
	ReasonReplayed  Reason = "replayed"
	ReasonPolicy    Reason = "policy"
	// ReasonNetwork: the proposal pays on another Bitcoin network.
	ReasonNetwork Reason = "network"
	// ReasonUnsupported: the proposal carries a critical field of a newer
	// version (wire.CriticalMin) that this seller cannot honour.
	ReasonUnsupported Reason = "unsupported"
	// ReasonUnreachable is the buyer's, never a seller's decision: after an
	// acceptance it could hold no connection to the seller that carries
	// the contract (a direct one, or a relayed one whose limits fit), so
	// nothing was funded, paid or sent.
	ReasonUnreachable Reason = "unreachable"
)

// validReason: a known reason, or a newer version's (one lowercase word,
// "_" allowed), which travels as it is so that a newer seller's refusals
// still reach an older buyer.
func validReason(r Reason) bool {
	for _, c := range r {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// Decision is the seller's signed answer to a proposal. An Accept, with the
// proposal, is the contract; it carries the seller's payment terms (opaque
// to this package: the Payer and PaymentReceiver agree on their encoding)
// and the time by which the buyer must fund and start the job. A Counter
// names the price per interval and/or the duration the seller would take.
type Decision struct {
	Version      uint32        `json:"version"`
	ProposalID   string        `json:"proposal_id,omitempty"`
	Seller       peer.ID       `json:"seller"`
	Buyer        peer.ID       `json:"buyer,omitempty"`
	Verdict      Verdict       `json:"verdict"`
	Reason       Reason        `json:"reason,omitempty"`
	Message      string        `json:"message,omitempty"`
	CounterPrice uint64        `json:"counter_msat_per_interval,omitempty"`
	CounterDur   time.Duration `json:"counter_duration,omitempty"`
	PaymentTerms []byte        `json:"payment_terms,omitempty"`
	FundBy       time.Time     `json:"fund_by,omitzero"`
	Issued       time.Time     `json:"issued"`
	Expiry       time.Time     `json:"expiry"`
	// RetryAfter, on a rejection for capacity, is when the seller expects
	// room again (retryafter.go); 0: not said.
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	// OpenHints, on an acceptance, says the seller reads an open message's
	// extension (the funding's input hints, payment/openhints.go): the
	// buyer adds it only then (an older seller refuses it). Field 15,
	// ignorable: an older buyer sends no hints, which the seller takes.
	OpenHints bool `json:"open_hints,omitempty"`
}

var _ record.Record = (*Decision)(nil)

// Domain implements record.Record.
func (d *Decision) Domain() string { return DecisionDomain }

// Codec implements record.Record.
func (d *Decision) Codec() []byte { return decisionCodec }

const (
	dcVersion = 1 + iota
	dcProposalID
	dcSeller
	dcBuyer
	dcVerdict
	dcReason
	dcMessage
	dcCounterPrice
	dcCounterDur
	dcPaymentTerms
	dcFundBy
	dcIssued
	dcExpiry
	dcRetryAfter
	dcOpenHints
)

// MarshalRecord implements record.Record.
func (d *Decision) MarshalRecord() ([]byte, error) {
	var e enc
	e.Uint(dcVersion, uint64(d.Version))
	if d.ProposalID != "" {
		id, err := hex.DecodeString(d.ProposalID)
		if err != nil || len(id) != 32 {
			return nil, fmt.Errorf("encode decision: %w: proposal id", ErrInvalid)
		}
		e.Bytes(dcProposalID, id)
	}
	e.String(dcSeller, string(d.Seller))
	e.String(dcBuyer, string(d.Buyer))
	e.Uint(dcVerdict, uint64(d.Verdict))
	e.String(dcReason, string(d.Reason))
	e.String(dcMessage, d.Message)
	e.Uint(dcCounterPrice, d.CounterPrice)
	e.d(dcCounterDur, d.CounterDur)
	e.Bytes(dcPaymentTerms, d.PaymentTerms)
	e.t(dcFundBy, d.FundBy)
	e.t(dcIssued, d.Issued)
	e.t(dcExpiry, d.Expiry)
	e.d(dcRetryAfter, d.RetryAfter)
	if d.OpenHints {
		e.Uint(dcOpenHints, 1)
	}
	if len(e.B) > MaxDecisionSize-512 {
		return nil, fmt.Errorf("encode decision: %w", ErrTooLarge)
	}
	return e.B, nil
}

var decisionSchema = wire.Schema{Max: MaxDecisionSize, Open: true, Fields: []wire.Spec{
	dcVersion: varintField, dcProposalID: bytesField, dcSeller: bytesField, dcBuyer: bytesField,
	dcVerdict: varintField, dcReason: bytesField, dcMessage: bytesField, dcCounterPrice: varintField,
	dcCounterDur: varintField, dcPaymentTerms: bytesField, dcFundBy: varintField, dcIssued: varintField,
	dcExpiry: varintField, dcRetryAfter: varintField, dcOpenHints: varintField,
}}

// UnmarshalRecord implements record.Record, strictly.
func (d *Decision) UnmarshalRecord(b []byte) error {
	*d = Decision{}
	fs, err := decode("decision", &decisionSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		var err error
		switch f.Num {
		case dcVersion:
			d.Version, err = f.Uint32()
		case dcProposalID:
			if len(f.B) != 32 {
				err = fmt.Errorf("%w: proposal id must be 32 bytes", ErrMalformed)
			}
			d.ProposalID = hex.EncodeToString(f.B)
		case dcSeller, dcBuyer:
			var id peer.ID
			if id, err = peer.IDFromBytes(f.B); err != nil {
				err = fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
			} else if f.Num == dcSeller {
				d.Seller = id
			} else {
				d.Buyer = id
			}
		case dcVerdict:
			if f.V < uint64(Accept) || f.V > uint64(Reject) {
				err = fmt.Errorf("%w: verdict %d", ErrMalformed, f.V)
			}
			d.Verdict = Verdict(f.V)
		case dcReason:
			var s string
			s, err = f.Text(32)
			d.Reason = Reason(s)
			if err == nil && !validReason(d.Reason) {
				err = fmt.Errorf("%w: unknown reason %q", ErrMalformed, s)
			}
		case dcMessage:
			d.Message, err = f.Text(maxMessageLen)
		case dcCounterPrice:
			d.CounterPrice = f.V
		case dcCounterDur:
			d.CounterDur, err = msDuration(f)
		case dcPaymentTerms:
			if len(f.B) > maxTermsLen {
				err = fmt.Errorf("%w: payment terms too long", ErrMalformed)
			}
			d.PaymentTerms = append([]byte(nil), f.B...)
		case dcFundBy:
			d.FundBy, err = msTime(f)
		case dcIssued:
			d.Issued, err = msTime(f)
		case dcExpiry:
			d.Expiry, err = msTime(f)
		case dcRetryAfter:
			d.RetryAfter, err = msDuration(f)
		case dcOpenHints:
			var v uint64
			v, err = f.Uint(1)
			d.OpenHints = v == 1
		}
		if err != nil {
			return fmt.Errorf("decode decision: %w", wireErr(err))
		}
	}
	return nil
}

// Validate checks a decision at now.
func (d *Decision) Validate(now time.Time) error {
	switch {
	case d.Version != Version:
		return fmt.Errorf("%w: decision version %d", ErrInvalid, d.Version)
	case d.Seller == "":
		return fmt.Errorf("%w: decision without seller", ErrInvalid)
	case d.Verdict == Accept && (d.ProposalID == "" || d.FundBy.IsZero()):
		return fmt.Errorf("%w: an acceptance names the proposal and a funding deadline", ErrInvalid)
	case d.Verdict != Accept && d.Reason == ReasonNone:
		return fmt.Errorf("%w: a counter or rejection needs a reason", ErrInvalid)
	}
	return checkTimes(d.Issued, d.Expiry, now)
}

// Output is the digest and size of one result the seller returns.
type Output struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"` // "sha256:<hex>"
	Size   uint64 `json:"size"`
}

// Usage is what a job consumed.
type Usage struct {
	CPUTime    time.Duration `json:"-"` // JSON: cpu_seconds (jsonnames.go)
	PeakMemory uint64        `json:"peak_memory_bytes"`
	OOMKills   uint64        `json:"oom_kills"`
	Wall       time.Duration `json:"-"` // JSON: wall_seconds
}

// Receipt is the seller's signed account of a contract: how the job ended,
// what it used, the sha256 of each output, and what it billed (sats) over
// how many intervals.
type Receipt struct {
	Version    uint32    `json:"version"`
	ContractID string    `json:"contract_id"`
	Seller     peer.ID   `json:"seller"`
	Buyer      peer.ID   `json:"buyer"`
	ExitCode   int64     `json:"exit_code"`
	Reason     string    `json:"reason"`
	Usage      Usage     `json:"usage"`
	Outputs    []Output  `json:"outputs"`
	Billed     int64     `json:"billed_sat"`
	Intervals  uint64    `json:"intervals"`
	Issued     time.Time `json:"issued"`
	Expiry     time.Time `json:"expiry"`
	// EgressBytes is the bytes moved both ways (egress.go): what the
	// seller sent the buyer (stdout, stderr, out.tar) plus what the buyer
	// sent the seller (the image when it was sent, the inputs). Egress is
	// what they were billed, in sats, within Billed (job protocol 1.3.0;
	// zero before, and then not encoded).
	EgressBytes uint64 `json:"egress_bytes,omitempty"`
	Egress      int64  `json:"egress_sat,omitempty"`
}

// ReceiptTTL is how long a receipt stays valid evidence.
const ReceiptTTL = 365 * 24 * time.Hour

var _ record.Record = (*Receipt)(nil)

// Domain implements record.Record.
func (r *Receipt) Domain() string { return ReceiptDomain }

// Codec implements record.Record.
func (r *Receipt) Codec() []byte { return receiptCodec }

const (
	rcVersion = 1 + iota
	rcContractID
	rcSeller
	rcBuyer
	rcExitCode
	rcReason
	rcCPU
	rcPeakMem
	rcOOM
	rcWall
	rcOutputs
	rcBilled
	rcIntervals
	rcIssued
	rcExpiry
	rcEgressBytes
	rcEgress
)

// MarshalRecord implements record.Record.
func (r *Receipt) MarshalRecord() ([]byte, error) {
	var e enc
	e.Uint(rcVersion, uint64(r.Version))
	id, err := hex.DecodeString(r.ContractID)
	if err != nil || len(id) != 32 {
		return nil, fmt.Errorf("encode receipt: %w: contract id", ErrInvalid)
	}
	e.Bytes(rcContractID, id)
	e.String(rcSeller, string(r.Seller))
	e.String(rcBuyer, string(r.Buyer))
	e.Int(rcExitCode, r.ExitCode)
	e.String(rcReason, r.Reason)
	e.d(rcCPU, r.Usage.CPUTime)
	e.Uint(rcPeakMem, r.Usage.PeakMemory)
	e.Uint(rcOOM, r.Usage.OOMKills)
	e.d(rcWall, r.Usage.Wall)
	for _, o := range r.Outputs {
		var oe enc
		oe.String(1, o.Name)
		oe.String(2, o.SHA256)
		oe.Uint(3, o.Size)
		e.B = protowire.AppendTag(e.B, rcOutputs, protowire.BytesType)
		e.B = protowire.AppendBytes(e.B, oe.B)
	}
	if r.Billed < 0 {
		return nil, fmt.Errorf("encode receipt: %w: negative bill", ErrInvalid)
	}
	e.Uint(rcBilled, uint64(r.Billed))
	e.Uint(rcIntervals, r.Intervals)
	e.t(rcIssued, r.Issued)
	e.t(rcExpiry, r.Expiry)
	if r.Egress < 0 {
		return nil, fmt.Errorf("encode receipt: %w: negative egress", ErrInvalid)
	}
	e.Uint(rcEgressBytes, r.EgressBytes)
	e.Uint(rcEgress, uint64(r.Egress))
	if len(e.B) > MaxReceiptSize-1024 {
		return nil, fmt.Errorf("encode receipt: %w", ErrTooLarge)
	}
	return e.B, nil
}

var receiptSchema = wire.Schema{Max: MaxReceiptSize, Open: true, Fields: []wire.Spec{
	rcVersion: varintField, rcContractID: bytesField, rcSeller: bytesField, rcBuyer: bytesField,
	rcExitCode: varintField, rcReason: bytesField, rcCPU: varintField, rcPeakMem: varintField,
	rcOOM: varintField, rcWall: varintField, rcOutputs: repeatedBytes, rcBilled: varintField,
	rcIntervals: varintField, rcIssued: varintField, rcExpiry: varintField,
	rcEgressBytes: varintField, rcEgress: varintField,
}}

// UnmarshalRecord implements record.Record, strictly.
func (r *Receipt) UnmarshalRecord(b []byte) error {
	*r = Receipt{}
	fs, err := decode("receipt", &receiptSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		var err error
		switch f.Num {
		case rcVersion:
			r.Version, err = f.Uint32()
		case rcContractID:
			if len(f.B) != 32 {
				err = fmt.Errorf("%w: contract id must be 32 bytes", ErrMalformed)
			}
			r.ContractID = hex.EncodeToString(f.B)
		case rcSeller, rcBuyer:
			var id peer.ID
			if id, err = peer.IDFromBytes(f.B); err != nil {
				err = fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
			} else if f.Num == rcSeller {
				r.Seller = id
			} else {
				r.Buyer = id
			}
		case rcExitCode:
			r.ExitCode = f.Int64()
		case rcReason:
			r.Reason, err = f.Text(32)
		case rcCPU:
			r.Usage.CPUTime, err = msDuration(f)
		case rcPeakMem:
			r.Usage.PeakMemory = f.V
		case rcOOM:
			r.Usage.OOMKills = f.V
		case rcWall:
			r.Usage.Wall, err = msDuration(f)
		case rcOutputs:
			if len(r.Outputs) >= maxOutputs {
				return fmt.Errorf("decode receipt: %w: more than %d outputs", ErrMalformed, maxOutputs)
			}
			var in Input
			if err = in.unmarshal(f.B); err == nil {
				r.Outputs = append(r.Outputs, Output{Name: in.Name, SHA256: in.SHA256, Size: in.Size})
			}
		case rcBilled:
			if f.V > 21e14 {
				err = fmt.Errorf("%w: bill out of range", ErrMalformed)
			}
			r.Billed = int64(f.V)
		case rcIntervals:
			r.Intervals = f.V
		case rcIssued:
			r.Issued, err = msTime(f)
		case rcExpiry:
			r.Expiry, err = msTime(f)
		case rcEgressBytes:
			r.EgressBytes = f.V
		case rcEgress:
			if f.V > 21e14 {
				err = fmt.Errorf("%w: egress out of range", ErrMalformed)
			}
			r.Egress = int64(f.V)
		}
		if err != nil {
			return fmt.Errorf("decode receipt: %w", wireErr(err))
		}
	}
	return nil
}

// Validate checks a receipt at now.
func (r *Receipt) Validate(now time.Time) error {
	switch {
	case r.Version != Version:
		return fmt.Errorf("%w: receipt version %d", ErrInvalid, r.Version)
	case r.Seller == "" || r.Buyer == "" || r.ContractID == "":
		return fmt.Errorf("%w: receipt names contract, seller and buyer", ErrInvalid)
	case r.Issued.IsZero() || r.Expiry.IsZero():
		return fmt.Errorf("%w: receipt times are required", ErrInvalid)
	case r.Egress < 0 || r.Egress > r.Billed:
		return fmt.Errorf("%w: receipt bills egress of %d sat outside its bill of %d sat", ErrInvalid, r.Egress, r.Billed)
	case !now.Before(r.Expiry):
		return ErrExpired
	}
	for _, o := range r.Outputs {
		if !isDigest(o.SHA256) {
			return fmt.Errorf("%w: output %q digest", ErrInvalid, o.Name)
		}
	}
	return nil
}

// signedRecord is a record this package seals and opens.
type signedRecord interface {
	record.Record
	Validate(now time.Time) error
}

func seal(r signedRecord, key crypto.PrivKey, max int) ([]byte, error) {
	env, err := record.Seal(r, key)
	if err != nil {
		return nil, err
	}
	b, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, ErrTooLarge
	}
	return b, nil
}

// open verifies an envelope of at most max bytes into r and returns the
// signer; r's contents are validated at now.
func open(data []byte, r signedRecord, max int, now time.Time) (peer.ID, error) {
	if len(data) > max {
		return "", fmt.Errorf("%w (%d bytes > %d)", ErrTooLarge, len(data), max)
	}
	env, err := record.ConsumeTypedEnvelope(data, r)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return "", err
		}
		return "", fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return "", fmt.Errorf("%w: signer key: %v", ErrMalformed, err)
	}
	if err := r.Validate(now); err != nil {
		return "", err
	}
	return signer, nil
}

func signerOf(key crypto.PrivKey) peer.ID {
	id, _ := peer.IDFromPrivateKey(key)
	return id
}

// SignProposal seals p with the buyer's identity key.
func SignProposal(p *Proposal, key crypto.PrivKey) ([]byte, error) {
	if signerOf(key) != p.Buyer {
		return nil, fmt.Errorf("sign proposal: key is not the buyer %s's", p.Buyer)
	}
	b, err := seal(p, key, MaxProposalSize)
	if err != nil {
		return nil, fmt.Errorf("sign proposal: %w", err)
	}
	return b, nil
}

// OpenProposal verifies a signed proposal: size, signature by the buyer,
// contents valid at now.
func OpenProposal(data []byte, now time.Time) (*Proposal, error) {
	var p Proposal
	signer, err := open(data, &p, MaxProposalSize, now)
	if err != nil {
		return nil, err
	}
	if signer != p.Buyer {
		return nil, fmt.Errorf("%w: proposal signed by %s, buyer %s", ErrWrongKey, signer, p.Buyer)
	}
	return &p, nil
}

// SignDecision seals d with the seller's identity key.
func SignDecision(d *Decision, key crypto.PrivKey) ([]byte, error) {
	if signerOf(key) != d.Seller {
		return nil, fmt.Errorf("sign decision: key is not the seller %s's", d.Seller)
	}
	b, err := seal(d, key, MaxDecisionSize)
	if err != nil {
		return nil, fmt.Errorf("sign decision: %w", err)
	}
	return b, nil
}

// OpenDecision verifies a signed decision: size, signature by the seller,
// contents valid at now.
func OpenDecision(data []byte, now time.Time) (*Decision, error) {
	var d Decision
	signer, err := open(data, &d, MaxDecisionSize, now)
	if err != nil {
		return nil, err
	}
	if signer != d.Seller {
		return nil, fmt.Errorf("%w: decision signed by %s, seller %s", ErrWrongKey, signer, d.Seller)
	}
	return &d, nil
}

// SignReceipt seals r with the seller's identity key.
func SignReceipt(r *Receipt, key crypto.PrivKey) ([]byte, error) {
	if signerOf(key) != r.Seller {
		return nil, fmt.Errorf("sign receipt: key is not the seller %s's", r.Seller)
	}
	b, err := seal(r, key, MaxReceiptSize)
	if err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	return b, nil
}

// OpenReceipt verifies a signed receipt: size, signature by the seller,
// contents valid at now.
func OpenReceipt(data []byte, now time.Time) (*Receipt, error) {
	var r Receipt
	signer, err := open(data, &r, MaxReceiptSize, now)
	if err != nil {
		return nil, err
	}
	if signer != r.Seller {
		return nil, fmt.Errorf("%w: receipt signed by %s, seller %s", ErrWrongKey, signer, r.Seller)
	}
	return &r, nil
}

// Contract is a proposal and the seller's signed acceptance of it: both
// signatures, both envelopes kept byte for byte. Its ID is the proposal's.
type Contract struct {
	ID            string    `json:"id"`
	Proposal      *Proposal `json:"proposal"`
	Acceptance    *Decision `json:"acceptance"`
	ProposalEnv   []byte    `json:"proposal_env"`
	AcceptanceEnv []byte    `json:"acceptance_env"`
}

// Marshal encodes the contract as its two envelopes.
func (c *Contract) Marshal() []byte {
	var e enc
	e.Bytes(1, c.ProposalEnv)
	e.Bytes(2, c.AcceptanceEnv)
	return e.B
}

// contractSchema: the proposal envelope, then the acceptance envelope.
var contractSchema = wire.Schema{Max: MaxContractSize, Fields: []wire.Spec{1: bytesField, 2: bytesField}}

// OpenContract verifies an encoded contract: both envelopes, the acceptance
// names this proposal, buyer and seller match. Expiry of the records is not
// checked (a contract outlives its negotiation); signatures and contents are,
// at the proposal's issue time.
func OpenContract(data []byte) (*Contract, error) {
	fs, err := decode("contract", &contractSchema, data)
	if err != nil {
		return nil, err
	}
	c := &Contract{}
	for _, f := range fs {
		if f.Num == 1 {
			c.ProposalEnv = append([]byte(nil), f.B...)
		} else {
			c.AcceptanceEnv = append([]byte(nil), f.B...)
		}
	}
	var p Proposal
	if _, err := record.ConsumeTypedEnvelope(c.ProposalEnv, &p); err != nil {
		return nil, fmt.Errorf("%w: contract proposal: %v", ErrMalformed, err)
	}
	at := p.Issued
	if c.Proposal, err = OpenProposal(c.ProposalEnv, at); err != nil {
		return nil, fmt.Errorf("contract proposal: %w", err)
	}
	var d Decision
	if _, err := record.ConsumeTypedEnvelope(c.AcceptanceEnv, &d); err != nil {
		return nil, fmt.Errorf("%w: contract acceptance: %v", ErrMalformed, err)
	}
	if c.Acceptance, err = OpenDecision(c.AcceptanceEnv, d.Issued); err != nil {
		return nil, fmt.Errorf("contract acceptance: %w", err)
	}
	c.ID = c.Proposal.ID()
	switch {
	case c.Acceptance.Verdict != Accept:
		return nil, fmt.Errorf("%w: contract decision is %s", ErrInvalid, c.Acceptance.Verdict)
	case c.Acceptance.ProposalID != c.ID:
		return nil, fmt.Errorf("%w: acceptance is for another proposal", ErrInvalid)
	case c.Acceptance.Seller != c.Proposal.Seller || c.Acceptance.Buyer != c.Proposal.Buyer:
		return nil, fmt.Errorf("%w: acceptance parties differ from the proposal's", ErrInvalid)
	}
	return c, nil
}
