package offer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestFetchRefusesBadSellers: a seller that streams an oversized frame, a
// truncated one, garbage, or nothing at all gets an error, never a panic or
// an unbounded allocation; a seller with nothing on offer says so.
func TestFetchRefusesBadSellers(t *testing.T) {
	mn, err := mocknet.FullMeshConnected(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	buyer, seller := mn.Hosts()[0], mn.Hosts()[1]
	key := seller.Peerstore().PrivKey(seller.ID())
	o := sample(seller.ID())
	o.Issued = time.Now().Truncate(time.Second)
	o.Expiry = o.Issued.Add(time.Minute)
	good, err := Sign(o, key)
	if err != nil {
		t.Fatal(err)
	}
	raw := func(b []byte) network.StreamHandler {
		return func(s network.Stream) { s.Write(b); s.Close() }
	}
	huge := binary.AppendUvarint(nil, MaxEnvelopeSize+1)
	cases := []struct {
		name    string
		handler network.StreamHandler
		wantErr error
	}{
		{"good", Handler(func() []byte { return good }, discard), nil},
		{"nothing on offer", Handler(func() []byte { return nil }, discard), ErrNoOffer},
		{"oversized frame", raw(append(huge, make([]byte, 100)...)), ErrTooLarge},
		{"truncated", raw(append(binary.AppendUvarint(nil, 500), 1, 2, 3)), errAny},
		{"garbage envelope", raw(append(binary.AppendUvarint(nil, 5), []byte("hello")...)), ErrInvalid},
		{"reset", func(s network.Stream) { s.Reset() }, errAny},
	}
	d := NewDiscoverer(DiscovererConfig{Host: buyer})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seller.SetStreamHandler(ProtocolID, c.handler)
			env, err := Fetch(context.Background(), buyer, seller.ID())
			if err == nil {
				_, err = d.Verify(seller.ID(), env)
			}
			switch {
			case c.wantErr == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case c.wantErr == errAny && err == nil:
				t.Fatal("accepted")
			case c.wantErr != nil && c.wantErr != errAny && !errors.Is(err, c.wantErr):
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestReadFrameChecksLengthBeforeAllocating(t *testing.T) {
	b := binary.AppendUvarint(nil, 1<<40)
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), 1024); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
}
