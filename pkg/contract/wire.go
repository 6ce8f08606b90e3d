package contract

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Errors a caller may branch on. Every validation failure wraps ErrInvalid.
var (
	ErrInvalid   = errors.New("invalid contract record")
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalid)
	ErrTooLarge  = fmt.Errorf("%w: too large", ErrInvalid)
	ErrExpired   = fmt.Errorf("%w: expired", ErrInvalid)
	ErrWrongKey  = fmt.Errorf("%w: signed by the wrong key", ErrInvalid)
	// ErrUnsupported: the record carries a critical field (wire.CriticalMin)
	// of a newer version, one this node must not ignore.
	ErrUnsupported = fmt.Errorf("%w: unsupported", ErrInvalid)
)

// enc writes protobuf wire format (wire.Encoder: fields in the order the
// caller writes them, number order; zero scalars and empty bytes omitted),
// times and durations in milliseconds.
type enc struct{ wire.Encoder }

func (e *enc) t(num protowire.Number, v time.Time) {
	if !v.IsZero() && v.UnixMilli() > 0 {
		e.Uint(num, uint64(v.UnixMilli()))
	}
}

func (e *enc) d(num protowire.Number, v time.Duration) {
	if v > 0 {
		e.Uint(num, uint64(v/time.Millisecond))
	}
}

// decode splits b into fields by s, strictly (see wire.Schema.Decode),
// with this package's errors.
func decode(what string, s *wire.Schema, b []byte) ([]wire.Field, error) {
	fs, err := s.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, wireErr(err))
	}
	return fs, nil
}

// wireErr gives an error of package wire this package's ErrMalformed,
// ErrTooLarge or ErrUnsupported; other errors pass as they are.
func wireErr(err error) error {
	if errors.Is(err, wire.ErrUnsupported) && !errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return wire.Wrap(err, ErrMalformed, ErrTooLarge)
}

// bytesField and varintField are the two kinds of a schema's fields;
// repeatedBytes may appear more than once.
var (
	bytesField    = wire.Spec{Kind: wire.Bytes}
	repeatedBytes = wire.Spec{Kind: wire.Bytes, Repeated: true}
	varintField   = wire.Spec{Kind: wire.Varint}
)

// maxMillis keeps times and durations far from overflow (about 35 years of
// milliseconds past 1970 is plenty until 2900).
const maxMillis = 1 << 45

func msTime(f wire.Field) (time.Time, error) { return f.Time(time.Millisecond, maxMillis) }

func msDuration(f wire.Field) (time.Duration, error) {
	return f.Duration(time.Millisecond, maxMillis)
}

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
	// RefuseUnreachable: the job stream came over a relayed connection
	// whose limits do not fit the contract (a buyer that keeps the
	// contract rule never opens one).
	RefuseUnreachable JobReason = "unreachable"
	// RefuseEnded: a resumed stream came for a contract whose job has
	// ended here (settled, or failed: the buyer was away beyond the
	// grace); trying again cannot help.
	RefuseEnded JobReason = "ended"
	// RefuseInternal: the seller's own failure.
	RefuseInternal JobReason = "internal"
	// RefuseUnknown is a reason this version does not know, or an error
	// frame of plain text from an older seller.
	RefuseUnknown JobReason = "unknown"
)

func knownJobReason(r JobReason) bool {
	switch r {
	case RefuseBadImage, RefuseBadInput, RefuseTooLarge, RefuseChannel, RefusePayment, RefuseContract, RefuseProtocol, RefusePull, RefuseInternal, RefuseUnreachable,
		RefuseFundingUnconfirmed, RefuseEnded:
		return true
	}
	return false
}

// Fault is whose fault a refusal for reason r is, as the buyer counts it.
func (r JobReason) Fault() Fault {
	switch r {
	case RefuseBadImage, RefuseBadInput, RefuseTooLarge, RefuseChannel, RefusePayment, RefuseContract, RefuseProtocol,
		RefuseFundingUnconfirmed:
		return FaultBuyer
	case RefusePull, RefuseUnreachable, RefuseEnded:
		// Nobody is blamed; another seller may reach the registry, or be
		// reached directly.
		return FaultUnreachable
	}
	return FaultSeller
}

// JobError is a seller's refusal as it travels back to the buyer: a
// reason and the seller's message.
type JobError struct {
	Reason  JobReason
	Message string
	// Closing is, on a refusal for reason channel, the transaction that
	// spends the channel the buyer named: the seller has closed it, and a
	// buyer whose chain source sees it only once mined learns it here
	// (checked by its payments: it must spend the channel validly).
	Closing []byte
	// Held is, on a refusal for reason payment, the channel update the
	// seller holds (an encoded payment update, its latest): a buyer that
	// lost that update in a crash adopts it, once checked against its
	// own record and key (reestablish.go). Older buyers ignore it.
	Held []byte
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
	jeClosing
	jeHeld
)

// maxJobErrorClosing bounds the closing transaction an error frame
// carries (a channel close is about 350 bytes).
const maxJobErrorClosing = 2048

// maxJobErrorHeld bounds the held update an error frame carries (a
// payment update's own cap).
const maxJobErrorHeld = 512

// jobErrorSchema is Open: a buyer ignores the fields a newer seller adds
// (a buyer from before Open took a frame with field 4 for an unknown
// refusal).
var jobErrorSchema = wire.Schema{Open: true, Max: maxJobErrorSize + maxJobErrorClosing + maxJobErrorHeld,
	Fields: []wire.Spec{jeReason: bytesField, jeMessage: bytesField, jeClosing: bytesField, jeHeld: bytesField}}

// marshalJobError encodes e for the error frame.
func marshalJobError(e *JobError) []byte {
	var w enc
	w.String(jeReason, string(e.Reason))
	w.String(jeMessage, truncateUTF8(e.Message, maxJobErrorText))
	if len(e.Closing) <= maxJobErrorClosing {
		w.Bytes(jeClosing, e.Closing)
	}
	if len(e.Held) <= maxJobErrorHeld {
		w.Bytes(jeHeld, e.Held)
	}
	return w.B
}

// UnmarshalJobError decodes an error frame from a seller. It never fails:
// a frame that does not decode (an older seller's plain text) becomes the
// message of RefuseUnknown, cut to a printable length.
func UnmarshalJobError(b []byte) *JobError {
	fields, err := decode("job error", &jobErrorSchema, b)
	e := &JobError{}
	for _, f := range fields {
		if err != nil {
			break
		}
		switch f.Num {
		case jeReason:
			var s string
			s, err = f.Text(32)
			e.Reason = JobReason(s)
		case jeMessage:
			e.Message, err = f.Text(maxJobErrorText)
		case jeClosing:
			e.Closing, err = cappedBytes(f.B, maxJobErrorClosing, "closing transaction")
		case jeHeld:
			e.Held, err = cappedBytes(f.B, maxJobErrorHeld, "held update")
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

// cappedBytes is a copy of b (nil when empty), or an error naming what
// when b is longer than max.
func cappedBytes(b []byte, max int, what string) ([]byte, error) {
	if len(b) > max {
		return nil, fmt.Errorf("%s of %d bytes", what, len(b))
	}
	if len(b) == 0 {
		return nil, nil
	}
	return bytes.Clone(b), nil
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

// Ready is the seller's jReady frame in /blackbox/job/1.2.0: the contract
// and channel are accepted, and whether the seller already holds the image
// the contract names by digest. A 1.1.0 jReady is empty (Ready{}).
type Ready struct {
	// HaveImage: the seller holds an image imported from a tarball of the
	// contract's digest; the buyer sends no image bytes, only the inputs.
	HaveImage bool
	// EgressPrice (1.3.0) is what the seller bills per GiB it sends the
	// buyer, in msat: its offer's egress price when it accepted (egress.go).
	EgressPrice uint64
}

// maxReadySize bounds a jReady frame.
const maxReadySize = 256

// Ready frame fields.
const (
	rdHaveImage protowire.Number = 1 + iota
	rdEgressPrice
)

var readySchema = wire.Schema{Max: maxReadySize, Fields: []wire.Spec{rdHaveImage: varintField, rdEgressPrice: varintField}}

func marshalReady(r Ready) []byte {
	var w enc
	if r.HaveImage {
		w.Uint(rdHaveImage, 1)
	}
	w.Uint(rdEgressPrice, r.EgressPrice)
	return w.B
}

// unmarshalReady decodes a seller's jReady frame strictly: a flag other
// than 0 or 1, an unknown field or trailing bytes are ErrMalformed.
func unmarshalReady(b []byte) (Ready, error) {
	fields, err := decode("ready", &readySchema, b)
	if err != nil {
		return Ready{}, err
	}
	var r Ready
	for _, f := range fields {
		switch f.Num {
		case rdHaveImage:
			v, err := f.Uint(1)
			if err != nil {
				return Ready{}, fmt.Errorf("decode ready: %w", wireErr(err))
			}
			r.HaveImage = v == 1
		case rdEgressPrice:
			r.EgressPrice = f.V
		}
	}
	return r, nil
}
