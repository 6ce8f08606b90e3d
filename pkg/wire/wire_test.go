package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// testSchema: 1 varint, 2 bytes, 3 repeated bytes, 5 varint, 6 fixed64
// (4 unknown).
var testSchema = Schema{
	Fields: []Spec{1: {Kind: Varint}, 2: {Kind: Bytes}, 3: {Kind: Bytes, Repeated: true}, 5: {Kind: Varint}, 6: {Kind: Fixed64}},
	Max:    64,
}

func encode(fs []Field, s *Schema) []byte {
	var b []byte
	for _, f := range fs {
		switch s.Fields[f.Num].Kind {
		case Bytes:
			b = protowire.AppendTag(b, f.Num, protowire.BytesType)
			b = protowire.AppendBytes(b, f.B)
		case Fixed64:
			b = protowire.AppendTag(b, f.Num, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, f.V)
		default:
			b = protowire.AppendTag(b, f.Num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.V)
		}
	}
	return b
}

func TestDecode(t *testing.T) {
	var e Encoder
	e.Uint(1, 7)
	e.String(2, "hi")
	e.Always(3, nil)
	e.Bytes(3, []byte("x"))
	e.Uint(5, 0) // omitted
	e.B = protowire.AppendTag(e.B, 6, protowire.Fixed64Type)
	e.B = protowire.AppendFixed64(e.B, 1<<60+3)
	fs, err := testSchema.Decode(e.B)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 5 || fs[0].V != 7 || string(fs[1].B) != "hi" || len(fs[2].B) != 0 || string(fs[3].B) != "x" || fs[4].V != 1<<60+3 {
		t.Fatalf("decoded %+v", fs)
	}
	stop := errors.New("stop")
	calls := 0
	if err := testSchema.Walk(e.B, func(f Field) error {
		calls++
		if f.Num == 2 {
			return stop
		}
		return nil
	}); err != stop || calls != 2 {
		t.Fatalf("walk: %v after %d fields", err, calls)
	}
	ordered := testSchema
	ordered.Ordered = true
	for name, c := range map[string]struct {
		s    *Schema
		b    []byte
		want error
	}{
		"bad tag":          {&testSchema, []byte{0x80}, ErrMalformed},
		"field zero":       {&testSchema, []byte{0x00, 1}, ErrMalformed},
		"unknown field":    {&testSchema, []byte{0x20, 1}, ErrMalformed},
		"past the schema":  {&testSchema, []byte{0x38, 1}, ErrMalformed},
		"huge number":      {&testSchema, protowire.AppendTag(nil, protowire.MaxValidNumber, 0), ErrMalformed},
		"wrong wire type":  {&testSchema, []byte{0x0a, 0}, ErrMalformed},
		"fixed64":          {&testSchema, []byte{0x09, 1, 2, 3, 4, 5, 6, 7, 8}, ErrMalformed},
		"varint as fixed":  {&testSchema, []byte{0x30, 1}, ErrMalformed},
		"fixed truncated":  {&testSchema, []byte{0x31, 1, 2, 3}, ErrMalformed},
		"repeated scalar":  {&testSchema, []byte{0x08, 1, 0x08, 1}, ErrMalformed},
		"varint truncated": {&testSchema, []byte{0x08, 0x80}, ErrMalformed},
		"bytes truncated":  {&testSchema, []byte{0x12, 3, 'a'}, ErrMalformed},
		"too large":        {&testSchema, make([]byte, 65), ErrTooLarge},
		"out of order":     {&ordered, []byte{0x28, 1, 0x08, 1}, ErrMalformed},
		"repeated apart":   {&ordered, []byte{0x1a, 0, 0x28, 1, 0x1a, 0}, ErrMalformed},
	} {
		if fs, err := c.s.Decode(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %+v, %v; want %v", name, fs, err, c.want)
		}
	}
	if _, err := ordered.Decode([]byte{0x08, 1, 0x1a, 0, 0x1a, 0, 0x28, 1}); err != nil {
		t.Errorf("ordered with a repeated field: %v", err)
	}
	if _, err := (&Schema{Fields: testSchema.Fields}).Decode(make([]byte, 1000)); !errors.Is(err, ErrMalformed) {
		t.Errorf("no cap: %v", err) // zeros are field 0, not a size error
	}
}

func TestAccessors(t *testing.T) {
	f := Field{Num: 4, V: math.MaxUint32 + 1}
	if _, err := f.Uint32(); !errors.Is(err, ErrMalformed) {
		t.Errorf("uint32 overflow: %v", err)
	}
	if v, err := (Field{V: 9}).Uint(9); v != 9 || err != nil {
		t.Errorf("uint at max: %d %v", v, err)
	}
	if got := (Field{V: protowire.EncodeZigZag(-9)}).Int64(); got != -9 {
		t.Errorf("int64: %d", got)
	}
	if _, err := (Field{B: []byte{0xff}}).Text(10); !errors.Is(err, ErrMalformed) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := (Field{B: []byte("abc")}).Text(2); !errors.Is(err, ErrMalformed) {
		t.Errorf("long text: %v", err)
	}
	ms := Field{V: 1764547200123}
	if got, err := ms.Time(time.Millisecond, 1<<45); err != nil || !got.Equal(time.UnixMilli(1764547200123)) || got.Location() != time.UTC {
		t.Errorf("time in ms: %v %v", got, err)
	}
	if got, err := (Field{V: 1 << 40}).Time(time.Second, 1<<40); err != nil || got.Unix() != 1<<40 {
		t.Errorf("time in s: %v %v", got, err)
	}
	if _, err := (Field{V: 1<<40 + 1}).Time(time.Second, 1<<40); !errors.Is(err, ErrMalformed) {
		t.Errorf("time out of range: %v", err)
	}
	if d, err := (Field{V: 90}).Duration(time.Second, 100); err != nil || d != 90*time.Second {
		t.Errorf("duration: %v %v", d, err)
	}
}

func TestWrap(t *testing.T) {
	mine := errors.New("mine malformed")
	big := errors.New("mine too large")
	_, err := testSchema.Decode([]byte{0x80})
	if w := Wrap(err, mine, big); !errors.Is(w, mine) || !errors.Is(w, ErrMalformed) || errors.Is(w, big) || w.Error() != "mine malformed: bad tag" {
		t.Errorf("malformed: %v", w)
	}
	_, err = testSchema.Decode(make([]byte, 100))
	if w := Wrap(err, mine, big); !errors.Is(w, big) || errors.Is(w, mine) {
		t.Errorf("too large: %v", w)
	}
	if w := Wrap(Wrap(err, mine, big), mine, big); w.Error() != Wrap(err, mine, big).Error() {
		t.Errorf("wrapped twice: %v", w)
	}
	other := io.EOF
	if Wrap(other, mine, big) != other || Wrap(nil, mine, big) != nil {
		t.Error("other errors pass through")
	}
}

func TestSplitFields(t *testing.T) {
	good := AppendFields(nil, 1, []byte("ab"), nil, bytes.Repeat([]byte{7}, 200))
	if !bytes.Equal(good[:6], []byte{1, 2, 'a', 'b', 0, 0xc8}) {
		t.Fatalf("encoding %x", good)
	}
	fs, err := SplitFields(good, 1, 2, 0, 200)
	if err != nil || string(fs[0]) != "ab" || len(fs[1]) != 0 || len(fs[2]) != 200 || cap(fs[0]) != 2 {
		t.Fatalf("split: %q %v", fs, err)
	}
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":           {nil, ErrMalformed},
		"unknown version": {append([]byte{2}, good[1:]...), ErrMalformed},
		"truncated":       {good[:len(good)-1], ErrMalformed},
		"no length":       {good[:5], ErrMalformed},
		"trailing":        {append(bytes.Clone(good), 0), ErrMalformed},
		"non-minimal":     {append([]byte{1, 0x82, 0x00}, good[2:]...), ErrMalformed},
		"huge length":     {[]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMalformed},
		"over its cap":    {AppendFields(nil, 1, []byte("abc"), nil, nil), ErrTooLarge},
	} {
		if fs, err := SplitFields(c.b, 1, 2, 0, 200); !errors.Is(err, c.want) {
			t.Errorf("%s: %q, %v; want %v", name, fs, err, c.want)
		}
	}
}

func TestFrames(t *testing.T) {
	b := AppendFrame(nil, []byte{3}, []byte("hello"))
	b = AppendFrame(b)
	b = AppendFrame(b, bytes.Repeat([]byte{1}, 300))
	r := bufio.NewReader(bytes.NewReader(b))
	if f, err := ReadFrame(r, 300); err != nil || string(f) != "\x03hello" {
		t.Fatalf("frame 1: %q %v", f, err)
	}
	if f, err := ReadFrame(r, 300); err != nil || len(f) != 0 {
		t.Fatalf("empty frame: %q %v", f, err)
	}
	if _, err := ReadFrame(r, 299); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("frame over max: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{5, 'a'}), 10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(nil), 10); !errors.Is(err, io.EOF) {
		t.Fatalf("no frame: %v", err)
	}
	if _, err := ReadFrameSize(strings.NewReader(strings.Repeat("\xff", 11)), 10); err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("overlong length: %v", err)
	}
}

// FuzzDecode: any input either fails or decodes to fields the schema
// allows, which encode back to a message that decodes to the same fields.
func FuzzDecode(f *testing.F) {
	f.Add(encode([]Field{{Num: 1, V: 300}, {Num: 2, B: []byte("x")}, {Num: 3}, {Num: 3, B: []byte("y")},
		{Num: 5, V: 1}, {Num: 6, V: 42}}, &testSchema), false)
	f.Add([]byte{0x28, 1, 0x08, 1}, true)
	f.Add([]byte{0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, false)
	f.Fuzz(func(t *testing.T, b []byte, ordered bool) {
		s := testSchema
		s.Ordered = ordered
		fs, err := s.Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		seen := map[protowire.Number]bool{}
		var last protowire.Number
		for _, f := range fs {
			spec := s.Fields[f.Num]
			if spec.Kind == Unknown || seen[f.Num] && !spec.Repeated || ordered && f.Num < last {
				t.Fatalf("decoded %+v against the schema", fs)
			}
			seen[f.Num], last = true, f.Num
		}
		again, err := s.Decode(encode(fs, &s))
		if err != nil || len(again) != len(fs) {
			t.Fatalf("re-encoded fields do not decode: %v", err)
		}
		for i := range fs {
			if fs[i].Num != again[i].Num || fs[i].V != again[i].V || !bytes.Equal(fs[i].B, again[i].B) {
				t.Fatalf("field %d: %+v then %+v", i, fs[i], again[i])
			}
		}
	})
}

// FuzzSplitFields: what SplitFields accepts is exactly what AppendFields
// writes for the fields it returns.
func FuzzSplitFields(f *testing.F) {
	f.Add(AppendFields(nil, 1, []byte("ab"), nil, []byte("c")))
	f.Add([]byte{1, 0x80, 0x00, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := SplitFields(b, 1, 4, 0, 100)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		if got := AppendFields(nil, 1, fs...); !bytes.Equal(got, b) {
			t.Fatalf("split %x, appended back %x", b, got)
		}
		if len(fs[0]) > 4 || len(fs[1]) != 0 || len(fs[2]) > 100 {
			t.Fatalf("fields over their caps: %q", fs)
		}
	})
}

// FuzzReadFrame: a frame read is at most max bytes, and the bytes read are
// its length as a uvarint (not always minimal: frames are not signed) and
// the frame.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, []byte("hello")), 10)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		r := bytes.NewReader(b)
		fr, err := ReadFrame(r, max)
		if err != nil {
			return
		}
		read := b[:len(b)-r.Len()]
		n, k := binary.Uvarint(read)
		if len(fr) > max || k <= 0 || n != uint64(len(fr)) || k+len(fr) != len(read) || !bytes.Equal(read[k:], fr) {
			t.Fatalf("read %q from %x (max %d)", fr, b, max)
		}
	})
}
