package contract

import (
	"errors"
	"fmt"
	"math"
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
