package payment

import (
	"strings"
	"testing"
)

// TestChannelJSONNames: a channel record says its role and state by name,
// and a record stored before, with numbers, still loads.
func TestChannelJSONNames(t *testing.T) {
	b, err := EncodeChannel(&Channel{ID: "x:0", Role: RoleBuyer, State: StateOpen})
	if err != nil || !strings.Contains(string(b), `"role":"buyer","state":"open"`) {
		t.Fatalf("encode: %s %v", b, err)
	}
	for _, in := range []string{string(b), `{"id":"x:0","role":1,"state":2}`} {
		c, err := DecodeChannel([]byte(in))
		if err != nil || c.Role != RoleBuyer || c.State != StateOpen {
			t.Errorf("decode %s: %+v %v", in, c, err)
		}
	}
	if _, err := DecodeChannel([]byte(`{"state":"opne"}`)); err == nil || !strings.Contains(err.Error(), `unknown channel state "opne"`) {
		t.Errorf("an unknown state: %v", err)
	}
}
