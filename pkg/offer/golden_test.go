package offer

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestGoldenEncoding pins the bytes an offer encodes to: a change of codec
// must not change one byte on the wire (the seller signs these bytes).
func TestGoldenEncoding(t *testing.T) {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{3}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	o := sample(id)
	o.Addrs = append(o.Addrs, ma.StringCast("/ip6/::1/udp/4001/quic-v1"))
	o.Runtimes = append(o.Runtimes, "runsc")
	b, err := o.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != goldenOffer {
		t.Fatalf("offer encodes to\n%s\nwant\n%s", got, goldenOffer)
	}
	var back Offer
	if err := back.UnmarshalRecord(b); err != nil {
		t.Fatal(err)
	}
	if again, err := back.MarshalRecord(); err != nil || !bytes.Equal(again, b) {
		t.Fatalf("decode and encode again: %x, %v", again, err)
	}
}

// TestDecodeErrorKinds pins which error each kind of bad input wraps.
func TestDecodeErrorKinds(t *testing.T) {
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"bad tag":         {[]byte{0x80}, ErrMalformed},
		"unknown field":   {[]byte{0xb0, 0x01, 1}, ErrMalformed},
		"wrong wire type": {[]byte{0x12, 0}, ErrMalformed},
		"truncated":       {[]byte{0x12, 5, 1}, ErrMalformed},
		"repeated scalar": {[]byte{0x08, 1, 0x08, 1}, ErrMalformed},
		"version range":   {[]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0x1f}, ErrMalformed},
		"time range":      {[]byte{0xa0, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f}, ErrMalformed},
		"too large":       {make([]byte, MaxPayloadSize+1), ErrTooLarge},
	} {
		var o Offer
		if err := o.UnmarshalRecord(c.b); !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	var o Offer
	if err := o.UnmarshalRecord([]byte{0x82, 0x01, 4, 'r', 'u', 'n', 'c', 0x82, 0x01, 1, 'k'}); err != nil || len(o.Runtimes) != 2 {
		t.Errorf("repeated runtimes: %v %v", o.Runtimes, err)
	}
	// Frames: the length is checked before the body is read.
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{0x81, 0x01})), 128); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized frame: %v", err)
	}
	if b, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{2, 'h', 'i', 'x'})), 2); err != nil || string(b) != "hi" {
		t.Errorf("frame: %q %v", b, err)
	}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{3, 'h', 'i'})), 3); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("short frame: %v", err)
	}
}

const goldenOffer = "08011226002408011220ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d11a08047f000001060fa11a17290000000000000000000000000000000191020fa1cd0320a01f288080808020308080808090033880c2d72f40c09a0c48a09c0150e80758d0860360904e683c7080a305780a82010472756e6382010572756e73638a0102657592012102070707070707070707070707070707070707070707070707070707070707070798012aa001c08f86d806a801989486d806"
