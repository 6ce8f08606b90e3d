package payment

import (
	"bytes"
	"fmt"

	"github.com/btcsuite/btcd/wire"
)

// Escrow peer messages, encoded as the channel messages are (message.go).
// They travel inside the market's /blackbox/escrow/1.0.0 messages
// (contract/escrowjob.go); their decoders treat the bytes as a peer's.

// MaxEscrowSigSize caps an EscrowSig before decoding.
const MaxEscrowSigSize = 256

// EscrowOffer is what the buyer sends the seller and the arbiter after
// funding an escrow: every parameter and the funding transaction.
// SellerIndex and ArbiterIndex echo the key indexes from their terms, so
// each recognises its key (and checks it derives to the key offered).
type EscrowOffer struct {
	BuyerKey, SellerKey, ArbiterKey []byte
	SellerIndex, ArbiterIndex       uint32
	Delay                           uint32
	SellerScript, BuyerScript       []byte
	FundingTx                       []byte
	Vout                            uint32
}

// Encode serializes o.
func (o *EscrowOffer) Encode() []byte {
	var b bytes.Buffer
	b.WriteByte(msgVersion)
	writeBytes8(&b, o.BuyerKey)
	writeBytes8(&b, o.SellerKey)
	writeBytes8(&b, o.ArbiterKey)
	writeU32(&b, o.SellerIndex)
	writeU32(&b, o.ArbiterIndex)
	writeU32(&b, o.Delay)
	writeBytes8(&b, o.SellerScript)
	writeBytes8(&b, o.BuyerScript)
	writeU32(&b, uint32(len(o.FundingTx)))
	b.Write(o.FundingTx)
	writeU32(&b, o.Vout)
	return b.Bytes()
}

// DecodeEscrowOffer parses an offer; any malformation is ErrMalformed.
func DecodeEscrowOffer(p []byte) (*EscrowOffer, error) {
	if len(p) > MaxOpenSize {
		return nil, fmt.Errorf("%w: escrow offer of %d bytes exceeds %d", ErrMalformed, len(p), MaxOpenSize)
	}
	r := reader{p: p}
	if v := r.u8(); v != msgVersion && r.err == nil {
		return nil, fmt.Errorf("%w: escrow offer version %d", ErrMalformed, v)
	}
	o := &EscrowOffer{}
	o.BuyerKey = r.bytes8(33)
	o.SellerKey = r.bytes8(33)
	o.ArbiterKey = r.bytes8(33)
	o.SellerIndex = r.u32()
	o.ArbiterIndex = r.u32()
	o.Delay = r.u32()
	o.SellerScript = r.bytes8(maxScriptLen)
	o.BuyerScript = r.bytes8(maxScriptLen)
	n := r.u32()
	if n > maxFundingTx {
		r.fail(fmt.Errorf("funding tx of %d bytes", n))
	}
	o.FundingTx = bytes.Clone(r.n(int(n)))
	o.Vout = r.u32()
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: escrow offer: %v", ErrMalformed, err)
	}
	return o, nil
}

// EscrowSig is one party's signature of one spend of an escrow, sent to
// the party that will complete and broadcast it.
type EscrowSig struct {
	EscrowID wire.OutPoint
	Kind     SpendKind
	Fee      int64
	Key      []byte
	Sig      []byte
}

// Encode serializes s.
func (s *EscrowSig) Encode() []byte {
	var b bytes.Buffer
	b.WriteByte(msgVersion)
	b.Write(s.EscrowID.Hash[:])
	writeU32(&b, s.EscrowID.Index)
	b.WriteByte(byte(s.Kind))
	writeU64(&b, uint64(s.Fee))
	writeBytes8(&b, s.Key)
	writeBytes8(&b, s.Sig)
	return b.Bytes()
}

// DecodeEscrowSig parses an escrow signature; any malformation is
// ErrMalformed.
func DecodeEscrowSig(p []byte) (*EscrowSig, error) {
	if len(p) > MaxEscrowSigSize {
		return nil, fmt.Errorf("%w: escrow signature of %d bytes exceeds %d", ErrMalformed, len(p), MaxEscrowSigSize)
	}
	r := reader{p: p}
	if v := r.u8(); v != msgVersion && r.err == nil {
		return nil, fmt.Errorf("%w: escrow signature version %d", ErrMalformed, v)
	}
	s := &EscrowSig{}
	copy(s.EscrowID.Hash[:], r.n(32))
	s.EscrowID.Index = r.u32()
	s.Kind = SpendKind(r.u8())
	s.Fee = r.i64()
	s.Key = r.bytes8(33)
	s.Sig = r.bytes8(maxSigLen)
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: escrow signature: %v", ErrMalformed, err)
	}
	if !s.Kind.valid() {
		return nil, fmt.Errorf("%w: escrow signature: kind %d", ErrMalformed, s.Kind)
	}
	return s, nil
}
