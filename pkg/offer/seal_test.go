package offer

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"
)

// resigned is env with its signature's first byte flipped.
func resigned(t testing.TB, env []byte) []byte {
	t.Helper()
	var e recordpb.Envelope
	if err := proto.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	e.Signature = bytes.Clone(e.Signature)
	e.Signature[0] ^= 1
	b, err := proto.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mixedEnvelopes are good envelopes of several sellers among ones Open
// refuses, each for a different reason, and a good one signed with a
// secp256k1 key (checked alone, outside the batch).
func mixedEnvelopes(t testing.TB) [][]byte {
	t.Helper()
	var envs [][]byte
	for range 6 {
		key, id := newKey(t)
		env, err := Sign(sample(id), key)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
	}
	key, id := newKey(t)
	good, _ := Sign(sample(id), key)
	other, _ := newKey(t)
	wrongKey, err := record.Seal(sample(id), other)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := wrongKey.Marshal()
	expired := sample(id)
	expired.Issued = t0.Add(-2 * time.Hour)
	expired.Expiry = t0.Add(-time.Hour)
	old, _ := Sign(expired, key)
	sk, _, _ := crypto.GenerateSecp256k1Key(rand.Reader)
	skID, _ := peer.IDFromPrivateKey(sk)
	secp, err := Sign(sample(skID), sk)
	if err != nil {
		t.Fatal(err)
	}
	return append(envs,
		resigned(t, good), // a bad signature in the batch
		wrong,             // signed, but not by the seller's key
		old,               // expired
		good[:len(good)/2],
		make([]byte, MaxEnvelopeSize+1),
		secp,
		good,
	)
}

// TestOpenBatchAgreesWithOpen: openBatch accepts and refuses what Open
// does, with Open's errors, whatever else is in the batch: a bad signature
// among good ones costs the good ones nothing.
func TestOpenBatchAgreesWithOpen(t *testing.T) {
	envs := mixedEnvelopes(t)
	at := t0.Add(time.Minute)
	offers, errs := openBatch(envs, at)
	accepted := 0
	for i, env := range envs {
		want, wantErr := Open(env, at)
		if fmt.Sprint(errs[i]) != fmt.Sprint(wantErr) {
			t.Errorf("envelope %d: openBatch says %v, Open %v", i, errs[i], wantErr)
		}
		if (offers[i] == nil) != (want == nil) || want != nil && offers[i].Seller != want.Seller {
			t.Errorf("envelope %d: openBatch gives %+v, Open %+v", i, offers[i], want)
		}
		if want != nil {
			accepted++
		}
	}
	if accepted != 8 {
		t.Fatalf("%d accepted; want the 6 good, the secp256k1 one and the last", accepted)
	}
	// All good: the batch alone decides.
	good := append(envs[:6:6], envs[len(envs)-1])
	offers, errs = openBatch(good, at)
	for i := range good {
		if errs[i] != nil || offers[i] == nil {
			t.Fatalf("good envelope %d refused: %v", i, errs[i])
		}
	}
}

// TestSignedBytesAreLibp2ps: what unseal says a signature covers is what
// libp2p's record.Seal signed.
func TestSignedBytesAreLibp2ps(t *testing.T) {
	key, id := newKey(t)
	env, _ := Sign(sample(id), key)
	s, err := unseal(env)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, f := range [][]byte{[]byte(EnvelopeDomain), EnvelopeCodec, s.payload} {
		want = binary.AppendUvarint(want, uint64(len(f)))
		want = append(want, f...)
	}
	if !bytes.Equal(s.signed, want) {
		t.Fatalf("signed bytes %x, want %x", s.signed, want)
	}
	if ok, err := key.GetPublic().Verify(s.signed, s.sig); !ok || err != nil {
		t.Fatalf("libp2p's signature does not cover the signed bytes: %v", err)
	}
}

// FuzzOpenBatch: envelopes a peer sends, several at once, get from
// openBatch what Open gives each (no panic, same verdict). The input is
// cut into envelopes at each 2-byte length prefix.
func FuzzOpenBatch(f *testing.F) {
	join := func(envs [][]byte) []byte {
		var b []byte
		for _, e := range envs {
			b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
			b = append(b, e...)
		}
		return b
	}
	// Small seeds: the fuzzer minimizes each input that finds new code by
	// running it again without one byte at a time, a signature check per
	// envelope each time.
	envs := mixedEnvelopes(f)
	n := len(envs)
	f.Add(join(envs[:2]))                                  // a batch of two
	f.Add(join([][]byte{envs[0], envs[1], envs[n-7]}))     // and a bad signature
	f.Add(join([][]byte{envs[n-6], envs[n-5], envs[n-2]})) // wrong key, expired, secp256k1
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var envs [][]byte
		for len(b) >= 2 && len(envs) < 8 {
			n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
			envs, b = append(envs, b[2:2+n]), b[2+n:]
		}
		at := t0.Add(time.Minute)
		offers, errs := openBatch(envs, at)
		for i, env := range envs {
			want, wantErr := Open(env, at)
			if (wantErr == nil) != (errs[i] == nil) || (want == nil) != (offers[i] == nil) {
				t.Fatalf("envelope %d: openBatch %v, Open %v", i, errs[i], wantErr)
			}
		}
	})
}

// BenchmarkOpenBatch: 20 envelopes of 20 sellers opened in one batch,
// next to opening them one by one (the ratio is batch ÷ one by one).
func BenchmarkOpenBatch(b *testing.B) {
	var envs [][]byte
	for range lookupWant {
		key, id := newKey(b)
		env, _ := Sign(sample(id), key)
		envs = append(envs, env)
	}
	at := t0.Add(time.Minute)
	var batch, single time.Duration
	for b.Loop() {
		start := time.Now()
		for _, env := range envs {
			if _, err := Open(env, at); err != nil {
				b.Fatal(err)
			}
		}
		single += time.Since(start)
		start = time.Now()
		if _, errs := openBatch(envs, at); errs[0] != nil {
			b.Fatal(errs[0])
		}
		batch += time.Since(start)
	}
	b.ReportMetric(float64(single)/float64(b.N)/1e6, "single-ms")
	b.ReportMetric(float64(batch)/float64(b.N)/1e6, "batch-ms")
	b.ReportMetric(float64(batch)/float64(single), "ratio")
}
