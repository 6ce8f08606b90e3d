package wire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestOpenSchema: an Open schema skips (and hands back) a newer version's
// fields of every wire type, and stays strict about everything else.
func TestOpenSchema(t *testing.T) {
	open := testSchema
	open.Open = true
	var e Encoder
	e.Uint(1, 7)
	e.Uint(4, 9) // unknown varint
	e.String(2, "hi")
	e.B = protowire.AppendTag(e.B, 9, protowire.Fixed32Type)
	e.B = protowire.AppendFixed32(e.B, 5)
	e.B = protowire.AppendTag(e.B, 10, protowire.Fixed64Type)
	e.B = protowire.AppendFixed64(e.B, 6)
	e.String(11, "new")
	e.String(11, "again") // an unknown field may repeat
	fs, err := open.Decode(e.B)
	if err != nil {
		t.Fatal(err)
	}
	var known, raw []byte
	for _, f := range fs {
		if f.Unknown != nil {
			raw = append(raw, f.Unknown...)
			continue
		}
		known = append(known, byte(f.Num))
	}
	if !bytes.Equal(known, []byte{1, 2}) {
		t.Fatalf("known fields %v", known)
	}
	// The unknown fields are kept byte for byte.
	var want Encoder
	want.Uint(4, 9)
	want.B = protowire.AppendTag(want.B, 9, protowire.Fixed32Type)
	want.B = protowire.AppendFixed32(want.B, 5)
	want.B = protowire.AppendTag(want.B, 10, protowire.Fixed64Type)
	want.B = protowire.AppendFixed64(want.B, 6)
	want.String(11, "new")
	want.String(11, "again")
	if !bytes.Equal(raw, want.B) {
		t.Fatalf("unknown fields %x, want %x", raw, want.B)
	}
	if _, err := testSchema.Decode(e.B); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a strict schema took unknown fields: %v", err)
	}

	critical := protowire.AppendTag(nil, CriticalMin+5, protowire.VarintType)
	critical = protowire.AppendVarint(critical, 1)
	group := protowire.AppendTag(nil, 12, protowire.StartGroupType)
	group = protowire.AppendTag(group, 12, protowire.EndGroupType)
	bad := []struct {
		name string
		b    []byte
		kind error
	}{
		{"critical unknown field", critical, ErrUnsupported},
		{"unknown group", group, ErrMalformed},
		{"truncated unknown bytes", []byte{0x5a, 5, 'a'}, ErrMalformed},
		{"truncated unknown varint", []byte{0x20, 0x80}, ErrMalformed},
		{"field 0", []byte{0x00, 1}, ErrMalformed},
		{"known field of the wrong type", []byte{0x0a, 0}, ErrMalformed},
		{"known scalar twice", []byte{0x08, 1, 0x20, 1, 0x08, 2}, ErrMalformed},
		{"over Max with unknown fields", append([]byte{0x5a, 70}, make([]byte, 70)...), ErrTooLarge},
	}
	for _, tc := range bad {
		if _, err := open.Decode(tc.b); !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.kind)
		}
	}
	ordered := open
	ordered.Ordered = true
	if _, err := ordered.Decode([]byte{0x50, 1, 0x08, 1}); !errors.Is(err, ErrMalformed) {
		t.Errorf("an unknown field out of order in an Ordered schema: %v", err)
	}
}

// FuzzDecodeOpen: an Open schema either refuses an input with a kind or
// hands back known fields the schema allows and unknown fields that are
// each one whole, non-critical field of the input.
func FuzzDecodeOpen(f *testing.F) {
	f.Add([]byte{0x08, 1, 0x20, 9, 0x5a, 1, 'x', 0x4d, 1, 2, 3, 4}, false)
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, CriticalMin, protowire.VarintType), 1), true)
	f.Fuzz(func(t *testing.T, b []byte, ordered bool) {
		s := testSchema
		s.Open, s.Ordered = true, ordered
		fs, err := s.Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		n := 0
		for _, f := range fs {
			if f.Unknown != nil {
				num, typ, k := protowire.ConsumeTag(f.Unknown)
				if k < 0 || num != f.Num || num >= CriticalMin || protowire.ConsumeFieldValue(num, typ, f.Unknown[k:]) != len(f.Unknown)-k {
					t.Fatalf("unknown field %x is not one field", f.Unknown)
				}
				if !bytes.Contains(b, f.Unknown) {
					t.Fatalf("unknown field %x is not the input's", f.Unknown)
				}
				n += len(f.Unknown)
				continue
			}
			if int(f.Num) >= len(s.Fields) || s.Fields[f.Num].Kind == Unknown {
				t.Fatalf("field %d decoded as known", f.Num)
			}
		}
		if n > len(b) {
			t.Fatalf("unknown fields of %d bytes in %d", n, len(b))
		}
	})
}
