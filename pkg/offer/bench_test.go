package offer

import (
	"testing"
	"time"
)

// BenchmarkSignOffer and BenchmarkOpenOffer measure what a seller pays to
// (re)publish and a buyer to verify one offer; BenchmarkRawEd25519 is the
// baseline (the signature alone), run side by side: make bench prints ratios.
func BenchmarkSignOffer(b *testing.B) {
	key, id := newKey(b)
	o := sample(id)
	for b.Loop() {
		if _, err := Sign(o, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenOffer(b *testing.B) {
	key, id := newKey(b)
	env, _ := Sign(sample(id), key)
	at := t0.Add(time.Minute)
	for b.Loop() {
		if _, err := Open(env, at); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519(b *testing.B) {
	key, _ := newKey(b)
	msg := make([]byte, 300)
	for b.Loop() {
		sig, err := key.Sign(msg)
		if err != nil {
			b.Fatal(err)
		}
		if ok, _ := key.GetPublic().Verify(msg, sig); !ok {
			b.Fatal("verify")
		}
	}
}

// BenchmarkDecodeOffer measures the codec alone: what every node pays per
// offer record before any signature check.
func BenchmarkDecodeOffer(b *testing.B) {
	_, id := newKey(b)
	raw, err := sample(id).MarshalRecord()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var o Offer
		if err := o.UnmarshalRecord(raw); err != nil {
			b.Fatal(err)
		}
	}
}
