package contract

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Escrowed jobs: a request naming an arbiter (Request.Escrow) is paid from a
// 2-of-3 escrow the buyer funds for the contract's whole price (start fee
// included) instead of per interval over a channel. The seller starts once
// the escrow has the configured confirmations; the job stream's payment
// frames then carry no signatures (the escrow already holds the money), and
// after the receipt buyer and seller sign the release together over
// EscrowProtocol. A dispute goes to the arbiter, who signs the payout it
// decides; its key counts only after the escrow's CLTV delay.

// EscrowProtocol carries the escrow messages between buyer, seller and
// arbiter: one request and one answer per stream.
const EscrowProtocol protocol.ID = "/blackbox/escrow/1.0.0"

// Escrow request types.
const (
	// EscrowAskTerms (buyer → arbiter, empty) is answered with a signed
	// ArbiterOffer; a node that is no arbiter refuses it.
	EscrowAskTerms byte = 1
	// EscrowRegister (buyer → arbiter): an EscrowNote with the contract
	// and the payment package's escrow offer as Payload.
	EscrowRegister byte = 2
	// EscrowCheck (seller → arbiter): an EscrowNote naming the contract
	// and the escrow; answered only if the arbiter holds that escrow for
	// that contract.
	EscrowCheck byte = 3
	// EscrowRelease (buyer → seller): an EscrowNote with the buyer's
	// release signature; answered with the seller's.
	EscrowRelease byte = 4
	// EscrowDisputeMsg (buyer or seller → arbiter): a signed Dispute.
	EscrowDisputeMsg byte = 5
	// EscrowDecision (arbiter → the party paid): an EscrowNote with the
	// arbiter's signature of the payout it decided.
	EscrowDecision byte = 6
)

const (
	escrowOK       byte = 100
	escrowRefused  byte = 101
	maxEscrowFrame      = MaxContractSize + MaxReceiptSize + 16<<10
	escrowTimeout       = 30 * time.Second
	maxReasonLen        = 500
	maxScriptBytes      = 80
)

// MaxEscrowDelay bounds every escrow's CLTV delay, in blocks (about ten
// weeks): no party locks its money longer.
const MaxEscrowDelay = 10080

// EscrowPayer is a Payer that can also fund an escrow for a contract whose
// request names an arbiter. PrepareEscrow returns the message the seller's
// EscrowReceiver.AcceptEscrow takes.
type EscrowPayer interface {
	PrepareEscrow(ctx context.Context, ct *Contract) ([]byte, error)
}

// EscrowReceiver is a PaymentReceiver that also takes escrowed contracts:
// EscrowTerms are the payment terms of an acceptance of p (fresh escrow key
// and payout script), AcceptEscrow verifies the buyer's escrow for ct and
// returns once it is funded (the configured confirmations).
type EscrowReceiver interface {
	EscrowTerms(ctx context.Context, p *Proposal) ([]byte, error)
	AcceptEscrow(ctx context.Context, buyer peer.ID, ct *Contract, msg []byte) error
}

// escrowRefusal is why a seller will not take p's escrow ("" = it will).
func (s *Seller) escrowRefusal(p *Proposal) string {
	if p.Request.Escrow == "" {
		return ""
	}
	if _, ok := s.cfg.Payments.(EscrowReceiver); !ok {
		return "this seller takes no escrowed jobs"
	}
	if arb := p.Request.Escrow; arb == p.Buyer.String() || arb == s.id.String() {
		return "the arbiter must be a third party"
	}
	return ""
}

// paymentTerms are an acceptance's payment terms: the channel's, or the
// escrow's for a request naming an arbiter.
func (s *Seller) paymentTerms(ctx context.Context, p *Proposal) ([]byte, error) {
	if p.Request.Escrow == "" {
		return s.cfg.Payments.Terms()
	}
	return s.cfg.Payments.(EscrowReceiver).EscrowTerms(ctx, p)
}

// acceptOpen takes the buyer's channel open, or its escrow.
func (j *sellerJob) acceptOpen(ctx context.Context, open []byte) error {
	if j.ct.Proposal.Request.Escrow == "" {
		if len(open) == 0 {
			return nil
		}
		return j.s.cfg.Payments.AcceptOpen(ctx, j.buyer, open)
	}
	er, ok := j.s.cfg.Payments.(EscrowReceiver)
	if !ok || len(open) == 0 {
		return errors.New("escrowed contract without an escrow")
	}
	return er.AcceptEscrow(ctx, j.buyer, j.ct, open)
}

// prepare funds the contract: a channel, or an escrow.
func (b *Buyer) prepare(ctx context.Context, ct *Contract) ([]byte, error) {
	if ct.Proposal.Request.Escrow == "" {
		if cp, ok := b.cfg.Payer.(ContractPayer); ok {
			open, err := cp.PrepareContract(ctx, ct.Proposal.Seller, ct.ID, ct.Acceptance.PaymentTerms, ct.Proposal.Total())
			return withOpenHints(b.cfg.Payer, ct, open), err
		}
		return b.cfg.Payer.Prepare(ctx, ct.Proposal.Seller, ct.Acceptance.PaymentTerms, ct.Proposal.Total())
	}
	ep, ok := b.cfg.Payer.(EscrowPayer)
	if !ok {
		return nil, errors.New("this node cannot fund escrows")
	}
	return ep.PrepareEscrow(ctx, ct)
}

// SellerEscrowTerms are a seller's payment terms for an escrowed contract
// (the Acceptance's PaymentTerms): its fresh escrow key, the key's index
// (echoed back in the escrow offer) and where a release pays.
type SellerEscrowTerms struct {
	Key          []byte
	KeyIndex     uint32
	PayoutScript []byte
	// MaxDelay is the longest CLTV delay, in blocks, the seller lets its
	// payment wait for an arbitrated payout (0: not said); the buyer
	// refuses, before funding, an arbiter whose delay is longer.
	MaxDelay uint32
}

var sellerEscrowTermsSchema = wire.Schema{Max: 256, Fields: []wire.Spec{1: bytesField, 2: varintField, 3: bytesField, 4: varintField}}

// Marshal encodes t.
func (t *SellerEscrowTerms) Marshal() []byte {
	var e enc
	e.Bytes(1, t.Key)
	e.Uint(2, uint64(t.KeyIndex))
	e.Bytes(3, t.PayoutScript)
	e.Uint(4, uint64(t.MaxDelay))
	return e.B
}

// UnmarshalSellerEscrowTerms decodes a seller's escrow terms, strictly.
func UnmarshalSellerEscrowTerms(b []byte) (*SellerEscrowTerms, error) {
	fs, err := decode("escrow terms", &sellerEscrowTermsSchema, b)
	if err != nil {
		return nil, err
	}
	t := &SellerEscrowTerms{}
	for _, f := range fs {
		switch f.Num {
		case 1:
			t.Key = append([]byte(nil), f.B...)
		case 2:
			t.KeyIndex, err = f.Uint32()
		case 3:
			t.PayoutScript = append([]byte(nil), f.B...)
		case 4:
			t.MaxDelay, err = f.Uint32()
		}
		if err != nil {
			return nil, fmt.Errorf("decode escrow terms: %w", wireErr(err))
		}
	}
	if len(t.Key) != 33 || len(t.PayoutScript) == 0 || len(t.PayoutScript) > maxScriptBytes {
		return nil, fmt.Errorf("%w: escrow terms need a 33-byte key and a payout script", ErrMalformed)
	}
	return t, nil
}

// EscrowNote is the body of most escrow messages: which contract and
// escrow it is about, and a payload (an escrow offer or signature of the
// payment package).
type EscrowNote struct {
	ContractID string
	EscrowID   string
	// Contract is the marshalled contract (EscrowRegister).
	Contract []byte
	Payload  []byte
	// Split is the seller's share in sats of a split decision (0: none).
	Split uint64
}

var escrowNoteSchema = wire.Schema{Max: maxEscrowFrame, Fields: []wire.Spec{1: bytesField, 2: bytesField, 3: bytesField, 4: bytesField, 5: varintField}}

// Marshal encodes n.
func (n *EscrowNote) Marshal() []byte {
	var e enc
	e.String(1, n.ContractID)
	e.String(2, n.EscrowID)
	e.Bytes(3, n.Contract)
	e.Bytes(4, n.Payload)
	e.Uint(5, n.Split)
	return e.B
}

// UnmarshalEscrowNote decodes a peer's note, strictly.
func UnmarshalEscrowNote(b []byte) (*EscrowNote, error) {
	fs, err := decode("escrow note", &escrowNoteSchema, b)
	if err != nil {
		return nil, err
	}
	n := &EscrowNote{}
	for _, f := range fs {
		switch f.Num {
		case 1:
			n.ContractID, err = f.Text(64)
		case 2:
			n.EscrowID, err = f.Text(80)
		case 3:
			if len(f.B) > MaxContractSize {
				err = fmt.Errorf("%w: contract of %d bytes", ErrTooLarge, len(f.B))
			}
			n.Contract = append([]byte(nil), f.B...)
		case 4:
			if len(f.B) > 16<<10 {
				err = fmt.Errorf("%w: payload of %d bytes", ErrTooLarge, len(f.B))
			}
			n.Payload = append([]byte(nil), f.B...)
		case 5:
			n.Split, err = f.Uint(21e14)
		}
		if err != nil {
			return nil, fmt.Errorf("decode escrow note: %w", wireErr(err))
		}
	}
	return n, nil
}

// Envelope domains and codecs of the escrow records.
const (
	ArbiterOfferDomain = "blackbox-arbiter-offer"
	DisputeDomain      = "blackbox-dispute"
)

var (
	arbiterOfferCodec = []byte("/blackbox/arbiter-offer-record/1")
	disputeCodec      = []byte("/blackbox/dispute-record/1")
)

// ArbiterOffer is an arbiter's signed answer to EscrowAskTerms: what it
// charges (FeeSat, paid by the buyer into PayoutScript by the escrow's
// funding transaction, dispute or not: the arbiter stands by for the
// escrow's life) and a fresh escrow key with its index.
type ArbiterOffer struct {
	Arbiter      peer.ID
	FeeSat       uint64
	PayoutScript []byte
	Key          []byte
	KeyIndex     uint32
	Issued       time.Time
	Expiry       time.Time
	// Delay is the CLTV delay in blocks the arbiter asks for: its key
	// counts that many blocks after the funding (the buyer may make it
	// longer for a long job); it refuses an escrow outside
	// [Delay, MaxDelay].
	Delay    uint32
	MaxDelay uint32
}

var _ record.Record = (*ArbiterOffer)(nil)

// Domain implements record.Record.
func (o *ArbiterOffer) Domain() string { return ArbiterOfferDomain }

// Codec implements record.Record.
func (o *ArbiterOffer) Codec() []byte { return arbiterOfferCodec }

var arbiterOfferSchema = wire.Schema{Max: 1 << 10, Fields: []wire.Spec{
	1: bytesField, 2: varintField, 3: bytesField, 4: bytesField, 5: varintField, 6: varintField, 7: varintField,
	8: varintField, 9: varintField,
}}

// MarshalRecord implements record.Record.
func (o *ArbiterOffer) MarshalRecord() ([]byte, error) {
	var e enc
	e.String(1, string(o.Arbiter))
	e.Uint(2, o.FeeSat)
	e.Bytes(3, o.PayoutScript)
	e.Bytes(4, o.Key)
	e.Uint(5, uint64(o.KeyIndex))
	e.t(6, o.Issued)
	e.t(7, o.Expiry)
	e.Uint(8, uint64(o.Delay))
	e.Uint(9, uint64(o.MaxDelay))
	return e.B, nil
}

// UnmarshalRecord implements record.Record, strictly.
func (o *ArbiterOffer) UnmarshalRecord(b []byte) error {
	*o = ArbiterOffer{}
	fs, err := decode("arbiter offer", &arbiterOfferSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		switch f.Num {
		case 1:
			o.Arbiter, err = peer.IDFromBytes(f.B)
			if err != nil {
				err = fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
			}
		case 2:
			o.FeeSat, err = f.Uint(21e14)
		case 3:
			o.PayoutScript = append([]byte(nil), f.B...)
		case 4:
			o.Key = append([]byte(nil), f.B...)
		case 5:
			o.KeyIndex, err = f.Uint32()
		case 6:
			o.Issued, err = msTime(f)
		case 7:
			o.Expiry, err = msTime(f)
		case 8:
			o.Delay, err = f.Uint32()
		case 9:
			o.MaxDelay, err = f.Uint32()
		}
		if err != nil {
			return fmt.Errorf("decode arbiter offer: %w", wireErr(err))
		}
	}
	return nil
}

// Validate checks an arbiter offer at now.
func (o *ArbiterOffer) Validate(now time.Time) error {
	switch {
	case o.Arbiter == "":
		return fmt.Errorf("%w: arbiter offer names no arbiter", ErrInvalid)
	case len(o.Key) != 33:
		return fmt.Errorf("%w: arbiter key must be 33 bytes", ErrInvalid)
	case o.FeeSat > 0 && (len(o.PayoutScript) == 0 || len(o.PayoutScript) > maxScriptBytes):
		return fmt.Errorf("%w: an arbiter fee needs a payout script", ErrInvalid)
	case o.Delay == 0 || o.MaxDelay < o.Delay || o.MaxDelay > MaxEscrowDelay:
		return fmt.Errorf("%w: arbiter delay %d..%d blocks (at most %d)", ErrInvalid, o.Delay, o.MaxDelay, MaxEscrowDelay)
	}
	if err := checkTimes(o.Issued, o.Expiry, now); err != nil {
		return fmt.Errorf("arbiter offer: %w", err)
	}
	return nil
}

// SignArbiterOffer seals o with the arbiter's identity key.
func SignArbiterOffer(o *ArbiterOffer, key crypto.PrivKey) ([]byte, error) {
	if signerOf(key) != o.Arbiter {
		return nil, errors.New("sign arbiter offer: key is not the arbiter's")
	}
	return seal(o, key, 2<<10)
}

// OpenArbiterOffer verifies an arbiter's signed offer.
func OpenArbiterOffer(data []byte, now time.Time) (*ArbiterOffer, error) {
	var o ArbiterOffer
	signer, err := open(data, &o, 2<<10, now)
	if err != nil {
		return nil, err
	}
	if signer != o.Arbiter {
		return nil, fmt.Errorf("%w: arbiter offer signed by %s, names %s", ErrWrongKey, signer, o.Arbiter)
	}
	return &o, nil
}

// Dispute is a party's signed case to the arbiter: the signed contract
// (both envelopes), the seller's signed receipt if there is one, the
// digests of the results the sender holds ("name=sha256:<hex>"), and why.
type Dispute struct {
	From       peer.ID
	EscrowID   string
	Contract   []byte
	Receipt    []byte
	Digests    []string
	Reason     string
	Issued     time.Time
	Expiry     time.Time
	contractID string
}

var _ record.Record = (*Dispute)(nil)

// Domain implements record.Record.
func (d *Dispute) Domain() string { return DisputeDomain }

// Codec implements record.Record.
func (d *Dispute) Codec() []byte { return disputeCodec }

var disputeSchema = wire.Schema{Max: maxEscrowFrame, Fields: []wire.Spec{
	1: bytesField, 2: bytesField, 3: bytesField, 4: bytesField, 5: repeatedBytes, 6: bytesField, 7: varintField, 8: varintField,
}}

// MarshalRecord implements record.Record.
func (d *Dispute) MarshalRecord() ([]byte, error) {
	var e enc
	e.String(1, string(d.From))
	e.String(2, d.EscrowID)
	e.Bytes(3, d.Contract)
	e.Bytes(4, d.Receipt)
	for _, s := range d.Digests {
		e.String(5, s)
	}
	e.String(6, d.Reason)
	e.t(7, d.Issued)
	e.t(8, d.Expiry)
	return e.B, nil
}

// UnmarshalRecord implements record.Record, strictly.
func (d *Dispute) UnmarshalRecord(b []byte) error {
	*d = Dispute{}
	fs, err := decode("dispute", &disputeSchema, b)
	if err != nil {
		return err
	}
	for _, f := range fs {
		switch f.Num {
		case 1:
			d.From, err = peer.IDFromBytes(f.B)
			if err != nil {
				err = fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
			}
		case 2:
			d.EscrowID, err = f.Text(80)
		case 3:
			d.Contract = append([]byte(nil), f.B...)
		case 4:
			d.Receipt = append([]byte(nil), f.B...)
		case 5:
			var s string
			if s, err = f.Text(100); err == nil {
				if len(d.Digests) >= 8 {
					err = fmt.Errorf("%w: more than 8 digests", ErrMalformed)
				}
				d.Digests = append(d.Digests, s)
			}
		case 6:
			d.Reason, err = f.Text(maxReasonLen)
		case 7:
			d.Issued, err = msTime(f)
		case 8:
			d.Expiry, err = msTime(f)
		}
		if err != nil {
			return fmt.Errorf("decode dispute: %w", wireErr(err))
		}
	}
	return nil
}

// Validate checks a dispute at now: its contract must open and name the
// sender as its buyer or seller, and a receipt must be that contract's.
func (d *Dispute) Validate(now time.Time) error {
	if err := checkTimes(d.Issued, d.Expiry, now); err != nil {
		return fmt.Errorf("dispute: %w", err)
	}
	if strings.TrimSpace(d.Reason) == "" {
		return fmt.Errorf("%w: dispute without a reason", ErrInvalid)
	}
	ct, err := OpenContract(d.Contract)
	if err != nil {
		return fmt.Errorf("dispute: %w", err)
	}
	if ct.Proposal.Buyer != d.From && ct.Proposal.Seller != d.From {
		return fmt.Errorf("%w: the sender is not a party to the contract", ErrInvalid)
	}
	if len(d.Receipt) > 0 {
		rc, err := OpenReceiptAny(d.Receipt)
		if err == nil {
			err = checkReceiptOf(rc, rc.Seller, ct)
		}
		if err != nil {
			return fmt.Errorf("dispute: receipt: %w", err)
		}
	}
	d.contractID = ct.ID
	return nil
}

// checkReceiptOf checks a receipt is the seller's, for ct.
func checkReceiptOf(rc *Receipt, signer peer.ID, ct *Contract) error {
	if signer != ct.Proposal.Seller || rc.ContractID != ct.ID || rc.Seller != ct.Proposal.Seller || rc.Buyer != ct.Proposal.Buyer {
		return fmt.Errorf("%w: receipt is not the seller's for this contract", ErrInvalid)
	}
	return nil
}

// ContractID is the disputed contract's ID (after OpenDispute).
func (d *Dispute) ContractID() string { return d.contractID }

// SignDispute seals d with the sender's identity key.
func SignDispute(d *Dispute, key crypto.PrivKey) ([]byte, error) {
	if signerOf(key) != d.From {
		return nil, errors.New("sign dispute: key is not the sender's")
	}
	return seal(d, key, maxEscrowFrame)
}

// OpenDispute verifies a signed dispute from a party of its contract.
func OpenDispute(data []byte, now time.Time) (*Dispute, error) {
	var d Dispute
	signer, err := open(data, &d, maxEscrowFrame, now)
	if err != nil {
		return nil, err
	}
	if signer != d.From {
		return nil, fmt.Errorf("%w: dispute signed by %s, from %s", ErrWrongKey, signer, d.From)
	}
	return &d, nil
}

// OpenReceiptAny verifies a receipt's signature and contents but not its
// expiry (an arbiter reads receipts long after they were issued).
func OpenReceiptAny(data []byte) (*Receipt, error) {
	var rc Receipt
	env, err := record.ConsumeTypedEnvelope(data, &rc)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt: %v", ErrMalformed, err)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil || signer != rc.Seller {
		return nil, fmt.Errorf("%w: receipt not signed by its seller", ErrWrongKey)
	}
	return &rc, nil
}

// EscrowHandler answers one escrow request from a peer.
type EscrowHandler func(ctx context.Context, from peer.ID, typ byte, payload []byte) ([]byte, error)

// ServeEscrow handles EscrowProtocol on h with handle.
func ServeEscrow(h host.Host, handle EscrowHandler) {
	h.SetStreamHandler(EscrowProtocol, func(st network.Stream) {
		if err := setupStream(st, maxEscrowFrame, time.Now().Add(escrowTimeout)); err != nil {
			st.Reset()
			return
		}
		defer st.Scope().ReleaseMemory(maxEscrowFrame)
		c := newConn(st)
		typ, b, err := c.recv(maxEscrowFrame)
		if err != nil {
			st.Reset()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), escrowTimeout)
		defer cancel()
		out, err := handle(ctx, st.Conn().RemotePeer(), typ, b)
		if err != nil {
			_ = c.send(escrowRefused, []byte(truncate(err.Error(), 400)))
		} else {
			_ = c.send(escrowOK, out)
		}
		st.Close()
	})
}

// ErrEscrowRefused is a peer's refusal of an escrow request; its message
// follows.
var ErrEscrowRefused = errors.New("refused")

// CallEscrow sends one escrow request to p and returns its answer.
func CallEscrow(ctx context.Context, h host.Host, p peer.ID, typ byte, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, escrowTimeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, EscrowProtocol)
	if err != nil {
		return nil, fmt.Errorf("escrow request to %s: %w", p, err)
	}
	if err := setupStream(st, maxEscrowFrame, time.Now().Add(escrowTimeout)); err != nil {
		st.Reset()
		return nil, err
	}
	defer st.Scope().ReleaseMemory(maxEscrowFrame)
	c := newConn(st)
	if err := c.send(typ, payload); err != nil {
		st.Reset()
		return nil, fmt.Errorf("escrow request to %s: %w", p, err)
	}
	t, b, err := c.recv(maxEscrowFrame)
	st.Close()
	switch {
	case err != nil:
		return nil, fmt.Errorf("escrow request to %s: %w", p, err)
	case t == escrowRefused:
		return nil, fmt.Errorf("%s %w: %s", p, ErrEscrowRefused, b)
	case t != escrowOK:
		return nil, fmt.Errorf("%w: escrow answer frame %d", ErrMalformed, t)
	}
	return b, nil
}
