package wire

import (
	"encoding/json"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Kind is the wire type a schema allows for a field number.
type Kind uint8

// Kinds. The zero Kind marks a number that is not in the schema.
const (
	Unknown Kind = iota
	Varint       // protobuf wire type 0
	Bytes        // protobuf wire type 2 (bytes, strings, nested messages)
	Fixed64      // protobuf wire type 1 (a float64's bits), read into V
)

// Spec is what a schema allows for one field number.
type Spec struct {
	Kind     Kind
	Repeated bool // may appear more than once
}

// CriticalMin is the first field number of the critical range: a field
// numbered from here up changes a message's meaning, so a reader that does
// not know it must refuse the message (ErrUnsupported) rather than skip
// it, even in an Open schema. A version that adds a field an older reader
// may safely ignore numbers it below CriticalMin; one that adds a field an
// older reader must not ignore (a new kind of contract, a new obligation)
// numbers it from CriticalMin up.
const CriticalMin = 1024

// Schema describes a message for Decode. Fields is indexed by field
// number: numbers with no Spec (Kind Unknown), 0 and numbers past its end
// are unknown fields: errors, unless the schema is Open.
type Schema struct {
	Fields []Spec
	// Open makes the schema forward-compatible, as protobuf is: an unknown
	// field below CriticalMin with a well-formed value (varint, fixed32,
	// fixed64 or bytes) is passed on as a Field with Unknown set, for the
	// caller to keep or drop, and may appear more than once (its schema is
	// not known). An unknown field from CriticalMin up is ErrUnsupported.
	// Everything else stays strict: known fields' wire types, repeats,
	// order and Max. Signed records of peers are Open, so that a node one
	// version older still reads a newer node's records; the signature is
	// over the received bytes, unknown fields included.
	Open bool
	// Ordered requires field numbers never to decrease, so that a message
	// has one encoding; a Repeated field's values are then consecutive.
	Ordered bool
	// Max caps the encoded size in bytes (ErrTooLarge above it); 0 is no cap.
	Max int
}

// Field is one decoded field: its number and either its varint or fixed64
// (V) or its bytes (B, a slice of the decoded input). A field an Open
// schema does not know has only Num and Unknown: its whole encoding, tag
// and value, a slice of the input.
type Field struct {
	Num     protowire.Number
	V       uint64
	B       []byte
	Unknown []byte
}

// Decode splits b into fields, strictly: a bad tag, a truncated value, an
// unknown field number (unless the schema is Open), a wire type other than
// the schema's, a field that is not Repeated appearing twice, a decreasing
// number in an Ordered schema and more than Max bytes are errors. Fields
// are returned in input order.
func (s *Schema) Decode(b []byte) ([]Field, error) {
	var out []Field
	if err := s.Walk(b, func(f Field) error {
		out = append(out, f)
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// Walk checks b as Decode does and calls fn with each field as it is read,
// without collecting them. It stops at the first error; fn's is returned
// as it is.
func (s *Schema) Walk(b []byte, fn func(Field) error) error {
	if s.Max > 0 && len(b) > s.Max {
		return tooLarge("%d bytes > %d", len(b), s.Max)
	}
	var seenBuf [32]bool // most schemas: no allocation
	seen := seenBuf[:]
	if len(s.Fields) > len(seen) {
		seen = make([]bool, len(s.Fields))
	}
	last := protowire.Number(0)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("bad tag")
		}
		if num < 1 || int64(num) >= int64(len(s.Fields)) || s.Fields[num].Kind == Unknown {
			if !s.Open || num < 1 {
				return malformed("unknown field %d", num)
			}
			if num >= CriticalMin {
				return unsupported("field %d is critical and not understood here (a newer version's)", num)
			}
			if s.Ordered && num < last {
				return malformed("field %d out of order", num)
			}
			last = num
			whole := b
			b = b[n:]
			switch typ {
			case protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type, protowire.BytesType:
				n = protowire.ConsumeFieldValue(num, typ, b)
			default: // groups: deprecated, never written by blackbox
				return malformed("unknown field %d has wire type %d", num, typ)
			}
			if n < 0 {
				return malformed("field %d truncated", num)
			}
			b = b[n:]
			if err := fn(Field{Num: num, Unknown: whole[:len(whole)-len(b)]}); err != nil {
				return err
			}
			continue
		}
		b = b[n:]
		spec := s.Fields[num]
		if seen[num] && !spec.Repeated {
			return malformed("field %d repeated", num)
		}
		if s.Ordered && num < last {
			return malformed("field %d out of order", num)
		}
		seen[num], last = true, num
		f := Field{Num: num}
		switch spec.Kind {
		case Bytes:
			if typ != protowire.BytesType {
				return malformed("field %d has wire type %d", num, typ)
			}
			f.B, n = protowire.ConsumeBytes(b)
		case Fixed64:
			if typ != protowire.Fixed64Type {
				return malformed("field %d has wire type %d", num, typ)
			}
			f.V, n = protowire.ConsumeFixed64(b)
		default:
			if typ != protowire.VarintType {
				return malformed("field %d has wire type %d", num, typ)
			}
			f.V, n = protowire.ConsumeVarint(b)
		}
		if n < 0 {
			return malformed("field %d truncated", num)
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// Uint returns the varint, an error if it is above max.
func (f Field) Uint(max uint64) (uint64, error) {
	if f.V > max {
		return 0, malformed("field %d out of range", f.Num)
	}
	return f.V, nil
}

// Uint32 returns the varint as a uint32, an error if it does not fit.
func (f Field) Uint32() (uint32, error) {
	v, err := f.Uint(math.MaxUint32)
	return uint32(v), err
}

// Int64 returns the varint as a zigzag-encoded signed integer.
func (f Field) Int64() int64 { return protowire.DecodeZigZag(f.V) }

// Text returns the bytes as a string, an error if they are longer than max
// bytes or not UTF-8.
func (f Field) Text(max int) (string, error) {
	if len(f.B) > max || !utf8.Valid(f.B) {
		return "", malformed("field %d: text too long or not UTF-8", f.Num)
	}
	return string(f.B), nil
}

// Duration returns the varint as a count of unit, an error if it is above
// max (which the caller keeps far from overflow).
func (f Field) Duration(unit time.Duration, max uint64) (time.Duration, error) {
	v, err := f.Uint(max)
	return time.Duration(v) * unit, err
}

// Time returns the varint as a count of unit (a whole number of seconds or
// a divisor of one) since the Unix epoch, in UTC; an error if it is above
// max.
func (f Field) Time(unit time.Duration, max uint64) (time.Time, error) {
	v, err := f.Uint(max)
	if err != nil {
		return time.Time{}, err
	}
	if unit >= time.Second {
		return time.Unix(int64(v)*int64(unit/time.Second), 0).UTC(), nil
	}
	per := int64(time.Second / unit)
	return time.Unix(int64(v)/per, int64(v)%per*int64(unit)).UTC(), nil
}

// Encoder writes protobuf wire format in the order the caller writes
// fields (number order, for one encoding per message), omitting zero
// varints and empty bytes.
type Encoder struct{ B []byte }

// Uint writes a varint field unless v is 0.
func (e *Encoder) Uint(num protowire.Number, v uint64) {
	if v != 0 {
		e.B = protowire.AppendTag(e.B, num, protowire.VarintType)
		e.B = protowire.AppendVarint(e.B, v)
	}
}

// Int writes a zigzag-encoded signed varint field unless v is 0.
func (e *Encoder) Int(num protowire.Number, v int64) { e.Uint(num, protowire.EncodeZigZag(v)) }

// Bytes writes a bytes field unless v is empty.
func (e *Encoder) Bytes(num protowire.Number, v []byte) {
	if len(v) != 0 {
		e.Always(num, v)
	}
}

// String writes a bytes field unless v is empty.
func (e *Encoder) String(num protowire.Number, v string) {
	if v != "" {
		e.B = protowire.AppendTag(e.B, num, protowire.BytesType)
		e.B = protowire.AppendString(e.B, v)
	}
}

// Always writes a bytes field even when v is empty (an element of a
// repeated field that must survive the round trip).
func (e *Encoder) Always(num protowire.Number, v []byte) {
	e.B = protowire.AppendTag(e.B, num, protowire.BytesType)
	e.B = protowire.AppendBytes(e.B, v)
}

// RawFields is encoded fields kept as they came: the unknown fields of an
// Open schema's message, which re-encoding appends so that the bytes a
// peer signed (and any ID hashed from them) come back. A string, so that
// the structs holding it stay comparable; base64 in JSON.
type RawFields string

// Keep appends f's encoding if f is an unknown field and reports whether
// it was.
func (r *RawFields) Keep(f Field) bool {
	if f.Unknown == nil {
		return false
	}
	*r += RawFields(f.Unknown)
	return true
}

// MarshalJSON writes the fields as base64.
func (r RawFields) MarshalJSON() ([]byte, error) { return json.Marshal([]byte(r)) }

// UnmarshalJSON reads what MarshalJSON writes.
func (r *RawFields) UnmarshalJSON(b []byte) error {
	var v []byte
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = RawFields(v)
	return nil
}
