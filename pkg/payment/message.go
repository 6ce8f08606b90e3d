package payment

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/btcsuite/btcd/wire"
)

// Peer messages of /blackbox/pay/1.0.0. They are authenticated by the
// Bitcoin signatures they carry (an update is worthless unless its signature
// verifies against the channel's close transaction), so they need no
// envelope of their own; the contract layer may still wrap them in one.
//
// Encoding: a version byte, then fixed-width big-endian integers and
// length-prefixed byte strings, in a fixed order, no trailing bytes. Every
// decoder checks the total size first and each length against a cap.

const (
	msgVersion = 1

	// MaxUpdateSize and MaxOpenSize cap messages before decoding.
	MaxUpdateSize = 512
	MaxOpenSize   = 64 << 10

	maxContractID = 64
	maxScriptLen  = 80
	maxFundingTx  = 60 << 10
)

// Update is one cumulative payment from buyer to seller: "the seller may
// close channel ChannelID paying itself Amount", with the buyer's signature
// of that close transaction. ContractID/ContractAmount say which contract
// the increase is for (ContractAmount is that contract's cumulative total).
type Update struct {
	ChannelID      wire.OutPoint
	Seq            uint64
	Amount         int64
	ContractID     string
	ContractAmount int64
	PayScript      []byte
	Sig            []byte
}

// Encode serializes u.
func (u *Update) Encode() []byte {
	var b bytes.Buffer
	b.WriteByte(msgVersion)
	b.Write(u.ChannelID.Hash[:])
	writeU32(&b, u.ChannelID.Index)
	writeU64(&b, u.Seq)
	writeU64(&b, uint64(u.Amount))
	writeBytes8(&b, []byte(u.ContractID))
	writeU64(&b, uint64(u.ContractAmount))
	writeBytes8(&b, u.PayScript)
	writeBytes8(&b, u.Sig)
	return b.Bytes()
}

// DecodeUpdate parses an update; any malformation is ErrMalformed.
func DecodeUpdate(p []byte) (*Update, error) {
	if len(p) > MaxUpdateSize {
		return nil, fmt.Errorf("%w: update of %d bytes exceeds %d", ErrMalformed, len(p), MaxUpdateSize)
	}
	r := reader{p: p}
	if v := r.u8(); v != msgVersion && r.err == nil {
		return nil, fmt.Errorf("%w: update version %d", ErrMalformed, v)
	}
	u := &Update{}
	copy(u.ChannelID.Hash[:], r.n(32))
	u.ChannelID.Index = r.u32()
	u.Seq = r.u64()
	u.Amount = r.i64()
	u.ContractID = string(r.bytes8(maxContractID))
	u.ContractAmount = r.i64()
	u.PayScript = r.bytes8(maxScriptLen)
	u.Sig = r.bytes8(maxSigLen)
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: update: %v", ErrMalformed, err)
	}
	return u, nil
}

// OpenRequest is what a buyer sends a seller after funding a channel: every
// parameter of the channel and the signed funding transaction.
type OpenRequest struct {
	BuyerKey     []byte
	SellerKey    []byte
	Expiry       uint32
	CloseFee     int64
	SellerScript []byte
	BuyerScript  []byte
	FundingTx    []byte
	Vout         uint32
	// InputHeights are the buyer's hints (openhints.go): for each
	// funding input, the height of the block holding the output it
	// spends, 0 for none. Sent only to a seller that reads them.
	InputHeights []int32
}

// Encode serializes o.
func (o *OpenRequest) Encode() []byte {
	var b bytes.Buffer
	b.WriteByte(msgVersion)
	writeBytes8(&b, o.BuyerKey)
	writeBytes8(&b, o.SellerKey)
	writeU32(&b, o.Expiry)
	writeU64(&b, uint64(o.CloseFee))
	writeBytes8(&b, o.SellerScript)
	writeBytes8(&b, o.BuyerScript)
	writeU32(&b, uint32(len(o.FundingTx)))
	b.Write(o.FundingTx)
	writeU32(&b, o.Vout)
	return o.appendOpenExt(b.Bytes())
}

// DecodeOpenRequest parses an open request; any malformation is
// ErrMalformed.
func DecodeOpenRequest(p []byte) (*OpenRequest, error) {
	if len(p) > MaxOpenSize {
		return nil, fmt.Errorf("%w: open request of %d bytes exceeds %d", ErrMalformed, len(p), MaxOpenSize)
	}
	r := reader{p: p}
	if v := r.u8(); v != msgVersion && r.err == nil {
		return nil, fmt.Errorf("%w: open request version %d", ErrMalformed, v)
	}
	o := &OpenRequest{}
	o.BuyerKey = r.bytes8(33)
	o.SellerKey = r.bytes8(33)
	o.Expiry = r.u32()
	o.CloseFee = r.i64()
	o.SellerScript = r.bytes8(maxScriptLen)
	o.BuyerScript = r.bytes8(maxScriptLen)
	n := r.u32()
	if n > maxFundingTx {
		r.fail(fmt.Errorf("funding tx of %d bytes", n))
	}
	o.FundingTx = bytes.Clone(r.n(int(n)))
	o.Vout = r.u32()
	if r.err == nil && len(r.p) > 0 {
		// The extension (openhints.go).
		if err := o.decodeOpenExt(r.p); err != nil {
			r.fail(fmt.Errorf("extension: %w", err))
		}
		r.p = nil
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: open request: %v", ErrMalformed, err)
	}
	return o, nil
}

func writeU32(b *bytes.Buffer, v uint32) { b.Write(binary.BigEndian.AppendUint32(nil, v)) }
func writeU64(b *bytes.Buffer, v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
func writeBytes8(b *bytes.Buffer, p []byte) {
	b.WriteByte(byte(len(p)))
	b.Write(p)
}

// reader consumes a message; after the first error every read returns zero
// values and done reports that error.
type reader struct {
	p   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) n(k int) []byte {
	if r.err != nil {
		return nil
	}
	if k < 0 || k > len(r.p) {
		r.fail(fmt.Errorf("truncated: need %d bytes, have %d", k, len(r.p)))
		return nil
	}
	out := r.p[:k]
	r.p = r.p[k:]
	return out
}

func (r *reader) u8() byte {
	b := r.n(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u32() uint32 {
	b := r.n(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.n(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// i64 reads an amount: a u64 that must fit a non-negative int64.
func (r *reader) i64() int64 {
	v := r.u64()
	if v > 1<<62 {
		r.fail(fmt.Errorf("amount %d out of range", v))
		return 0
	}
	return int64(v)
}

func (r *reader) bytes8(max int) []byte {
	l := int(r.u8())
	if r.err == nil && l > max {
		r.fail(fmt.Errorf("field of %d bytes exceeds %d", l, max))
		return nil
	}
	b := r.n(l)
	if l == 0 {
		return nil
	}
	return bytes.Clone(b)
}

func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.p) != 0 {
		return fmt.Errorf("%d trailing bytes", len(r.p))
	}
	return nil
}
