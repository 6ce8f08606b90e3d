package offer

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// rawOffer signs payload bytes as they are: what a newer version's
// encoder would have written.
type rawOffer struct {
	Offer
	payload []byte
}

func (r *rawOffer) MarshalRecord() ([]byte, error) { return r.payload, nil }

// TestFutureOffer: an offer of a newer version, carrying fields this one
// does not know (after field 22 network, as the next version would add
// them), opens and verifies everywhere a node reads offers: Open, the DHT
// validator and the discoverer. A changed byte in an unknown field breaks
// the signature; a critical unknown field is ErrUnsupported; a malformed
// known field is still ErrMalformed.
func TestFutureOffer(t *testing.T) {
	key, id := newKey(t)
	o := sample(id)
	o.Network = "regtest"
	b, _ := o.MarshalRecord()
	extra := protowire.AppendTag(nil, 23, protowire.VarintType)
	extra = protowire.AppendVarint(extra, 5)
	extra = protowire.AppendTag(extra, 40, protowire.BytesType)
	extra = protowire.AppendString(extra, "future-feature")
	seal := func(payload []byte) []byte {
		env, err := record.Seal(&rawOffer{*o, payload}, key)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := env.Marshal()
		return w
	}
	env := seal(append(bytes.Clone(b), extra...))
	got, err := Open(env, t0)
	if err != nil {
		t.Fatalf("a newer seller's offer: %v", err)
	}
	if got.Network != "regtest" || got.Prices != o.Prices || got.Seq != o.Seq {
		t.Fatalf("decoded %+v", got)
	}
	v := Validator{Now: func() time.Time { return t0 }}
	if err := v.Validate(DHTKey(id), env); err != nil {
		t.Fatalf("DHT validator: %v", err)
	}
	tampered := bytes.Clone(env)
	tampered[bytes.Index(env, []byte("future-feature"))] ^= 1
	if _, err := Open(tampered, t0); err == nil {
		t.Fatal("a changed unknown field still verified")
	}

	critical := protowire.AppendTag(nil, wire.CriticalMin, protowire.VarintType)
	critical = protowire.AppendVarint(critical, 1)
	if _, err := Open(seal(append(bytes.Clone(b), critical...)), t0); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a critical field: %v", err)
	}
	badNet := protowire.AppendTag(nil, fNetwork, protowire.VarintType) // network as a varint
	badNet = protowire.AppendVarint(badNet, 1)
	if _, err := Open(seal(append(extra, badNet...)), t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a known field of the wrong type: %v", err)
	}
}
