package contract

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Errors a caller may branch on. Every validation failure wraps ErrInvalid.
var (
	ErrInvalid   = errors.New("invalid contract record")
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalid)
	ErrTooLarge  = fmt.Errorf("%w: too large", ErrInvalid)
	ErrExpired   = fmt.Errorf("%w: expired", ErrInvalid)
	ErrWrongKey  = fmt.Errorf("%w: signed by the wrong key", ErrInvalid)
)

// enc writes protobuf wire format: fields in the order the caller writes
// them (number order), zero scalars and empty bytes omitted.
type enc struct{ b []byte }

func (e *enc) u(num protowire.Number, v uint64) {
	if v != 0 {
		e.b = protowire.AppendTag(e.b, num, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, v)
	}
}

func (e *enc) s(num protowire.Number, v int64) { e.u(num, protowire.EncodeZigZag(v)) }

func (e *enc) by(num protowire.Number, v []byte) {
	if len(v) != 0 {
		e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
		e.b = protowire.AppendBytes(e.b, v)
	}
}

func (e *enc) str(num protowire.Number, v string) { e.by(num, []byte(v)) }

func (e *enc) t(num protowire.Number, v time.Time) {
	if !v.IsZero() && v.UnixMilli() > 0 {
		e.u(num, uint64(v.UnixMilli()))
	}
}

func (e *enc) d(num protowire.Number, v time.Duration) {
	if v > 0 {
		e.u(num, uint64(v/time.Millisecond))
	}
}

// field is one decoded field: its number, and either a varint or bytes.
type field struct {
	num protowire.Number
	v   uint64
	b   []byte
}

// decode splits b into fields, strictly: bad tags, truncation, numbers
// outside 1..maxField, wire types other than the schema's (bytesField says
// which numbers are bytes) and scalars repeated are errors. repeated says
// which numbers may appear more than once.
func decode(what string, b []byte, max int, maxField protowire.Number, bytesField, repeated func(protowire.Number) bool) ([]field, error) {
	if len(b) > max {
		return nil, fmt.Errorf("decode %s: %w (%d bytes > %d)", what, ErrTooLarge, len(b), max)
	}
	var out []field
	seen := make([]bool, maxField+1)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("decode %s: %w: bad tag", what, ErrMalformed)
		}
		b = b[n:]
		if num < 1 || num > maxField {
			return nil, fmt.Errorf("decode %s: %w: unknown field %d", what, ErrMalformed, num)
		}
		if seen[num] && !repeated(num) {
			return nil, fmt.Errorf("decode %s: %w: field %d repeated", what, ErrMalformed, num)
		}
		seen[num] = true
		f := field{num: num}
		if bytesField(num) {
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("decode %s: %w: field %d has wire type %d", what, ErrMalformed, num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("decode %s: %w: field %d truncated", what, ErrMalformed, num)
			}
			f.b = v
			b = b[n:]
		} else {
			if typ != protowire.VarintType {
				return nil, fmt.Errorf("decode %s: %w: field %d has wire type %d", what, ErrMalformed, num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("decode %s: %w: field %d truncated", what, ErrMalformed, num)
			}
			f.v = v
			b = b[n:]
		}
		out = append(out, f)
	}
	return out, nil
}

// maxMillis keeps times and durations far from overflow (about 35 years of
// milliseconds past 1970 is plenty until 2900).
const maxMillis = 1 << 45

func (f field) time() (time.Time, error) {
	if f.v > maxMillis {
		return time.Time{}, fmt.Errorf("%w: field %d out of range", ErrMalformed, f.num)
	}
	return time.UnixMilli(int64(f.v)).UTC(), nil
}

func (f field) dur() (time.Duration, error) {
	if f.v > maxMillis {
		return 0, fmt.Errorf("%w: field %d out of range", ErrMalformed, f.num)
	}
	return time.Duration(f.v) * time.Millisecond, nil
}

func (f field) u32() (uint32, error) {
	if f.v > math.MaxUint32 {
		return 0, fmt.Errorf("%w: field %d out of range", ErrMalformed, f.num)
	}
	return uint32(f.v), nil
}

func (f field) text(max int) (string, error) {
	if len(f.b) > max || !utf8.Valid(f.b) {
		return "", fmt.Errorf("%w: field %d: text too long or not UTF-8", ErrMalformed, f.num)
	}
	return string(f.b), nil
}

func (f field) int64() int64 { return protowire.DecodeZigZag(f.v) }

// JobReason is the machine-readable reason a seller ends a job stream with,
// carried in the job protocol's error frame. Unknown reasons decode as
// RefuseUnknown, so a newer seller's reasons still travel.
type JobReason string

// Job stream reasons. The buyer's faults first: its image, inputs,
// channel, payments or contract did not pass the seller's checks.
const (
	RefuseBadImage JobReason = "bad_image" // the image is not one the seller can run
	RefuseBadInput JobReason = "bad_input" // an input does not match its digest or size
	RefuseTooLarge JobReason = "too_large" // the image or inputs exceed the seller's limits
	RefuseChannel  JobReason = "channel"   // the payment channel open was refused
	RefusePayment  JobReason = "payment"   // a payment was refused or does not cover the interval
	RefuseContract JobReason = "contract"  // the contract is not one the seller accepted, or its funding deadline passed
	RefuseProtocol JobReason = "protocol"  // the buyer broke the job protocol
	// RefusePull: the seller could not pull the image reference (a bad
	// reference, or the seller's network).
	RefusePull JobReason = "pull"
	// RefuseInternal: the seller's own failure.
	RefuseInternal JobReason = "internal"
	// RefuseUnknown is a reason this version does not know, or an error
	// frame of plain text from an older seller.
	RefuseUnknown JobReason = "unknown"
)

func knownJobReason(r JobReason) bool {
	switch r {
	case RefuseBadImage, RefuseBadInput, RefuseTooLarge, RefuseChannel, RefusePayment, RefuseContract, RefuseProtocol, RefusePull, RefuseInternal:
		return true
	}
	return false
}

// Fault is whose fault a refusal for reason r is, as the buyer counts it.
func (r JobReason) Fault() Fault {
	switch r {
	case RefuseBadImage, RefuseBadInput, RefuseTooLarge, RefuseChannel, RefusePayment, RefuseContract, RefuseProtocol:
		return FaultBuyer
	case RefusePull:
		// Nobody is blamed; another seller may reach the registry.
		return FaultUnreachable
	}
	return FaultSeller
}

// JobError is a seller's refusal as it travels back to the buyer: a
// reason and the seller's message.
type JobError struct {
	Reason  JobReason
	Message string
}

func (e *JobError) Error() string { return fmt.Sprintf("seller refused (%s): %s", e.Reason, e.Message) }

// maxJobErrorSize bounds an error frame; maxJobErrorText its message.
const (
	maxJobErrorSize = 1024
	maxJobErrorText = 300
)

// Error frame fields.
const (
	jeReason protowire.Number = 1 + iota
	jeMessage
)

// marshalJobError encodes e for the error frame.
func marshalJobError(e *JobError) []byte {
	var w enc
	w.str(jeReason, string(e.Reason))
	w.str(jeMessage, truncateUTF8(e.Message, maxJobErrorText))
	return w.b
}

// UnmarshalJobError decodes an error frame from a seller. It never fails:
// a frame that does not decode (an older seller's plain text) becomes the
// message of RefuseUnknown, cut to a printable length.
func UnmarshalJobError(b []byte) *JobError {
	fields, err := decode("job error", b, maxJobErrorSize, jeMessage,
		func(protowire.Number) bool { return true }, func(protowire.Number) bool { return false })
	e := &JobError{}
	for _, f := range fields {
		if err != nil {
			break
		}
		switch f.num {
		case jeReason:
			var s string
			s, err = f.text(32)
			e.Reason = JobReason(s)
		case jeMessage:
			e.Message, err = f.text(maxJobErrorText)
		}
	}
	if err != nil || e.Reason == "" {
		return &JobError{Reason: RefuseUnknown, Message: printable(truncateUTF8(string(b), maxJobErrorText))}
	}
	if !knownJobReason(e.Reason) {
		e.Reason = RefuseUnknown
	}
	e.Message = printable(e.Message)
	return e
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// printable replaces control characters and invalid UTF-8 of a peer's text
// before it reaches a terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 && r != '\t' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}
