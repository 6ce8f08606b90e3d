package enumjson

import (
	"encoding/json"
	"fmt"
	"testing"
)

type color uint8

func (c color) String() string {
	switch c {
	case 1:
		return "red"
	case 2:
		return "blue"
	}
	return fmt.Sprintf("color(%d)", uint8(c))
}

func (c color) MarshalText() ([]byte, error)  { return []byte(c.String()), nil }
func (c *color) UnmarshalText(b []byte) error { return Parse(string(b), c, "color") }
func (c *color) UnmarshalJSON(b []byte) error { return Unmarshal(b, c, "color") }

// TestRoundTrip: names out, names or old numbers in, map keys too.
func TestRoundTrip(t *testing.T) {
	type rec struct {
		C color         `json:"c"`
		M map[color]int `json:"m"`
	}
	b, err := json.Marshal(rec{C: 2, M: map[color]int{1: 5}})
	if err != nil || string(b) != `{"c":"blue","m":{"red":5}}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	for _, in := range []string{`{"c":"blue","m":{"red":5}}`, `{"c":2,"m":{"1":5}}`} {
		var r rec
		if err := json.Unmarshal([]byte(in), &r); err != nil || r.C != 2 || r.M[1] != 5 {
			t.Errorf("unmarshal %s: %+v %v", in, r, err)
		}
	}
	var c color
	if err := json.Unmarshal([]byte(`"green"`), &c); err == nil {
		t.Error("an unknown name was accepted")
	}
	if err := json.Unmarshal([]byte(`7`), &c); err != nil || c.String() != "color(7)" {
		t.Errorf("an unnamed number: %v %v", c, err)
	}
}
