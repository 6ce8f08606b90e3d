package offer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func sample(id peer.ID) *Offer {
	return &Offer{
		Version:         Version,
		Seller:          id,
		Addrs:           []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")},
		Resources:       Resources{CPUMillis: 4000, MemoryBytes: 8 << 30, DiskBytes: 100 << 30, BandwidthBps: 100e6},
		Prices:          Prices{CoreHour: 200_000, MemGiBHour: 20_000, DiskGiBHour: 1_000, EgressGiB: 50_000, StartFee: 10_000},
		MinDuration:     time.Minute,
		MaxDuration:     24 * time.Hour,
		BillingInterval: 10 * time.Second,
		Runtimes:        []string{"runc"},
		Region:          "eu",
		PaymentKey:      append([]byte{2}, bytes.Repeat([]byte{7}, 32)...),
		Seq:             42,
		Issued:          t0,
		Expiry:          t0.Add(10 * time.Minute),
	}
}

func TestEncodeRoundTripIsDeterministic(t *testing.T) {
	_, id := newKey(t)
	o := sample(id)
	a, err := o.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	var back Offer
	if err := back.UnmarshalRecord(a); err != nil {
		t.Fatal(err)
	}
	b, err := back.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("re-encoding differs:\n%x\n%x", a, b)
	}
	if back.Seller != id || back.Resources != o.Resources || back.Prices != o.Prices ||
		back.Seq != 42 || !back.Expiry.Equal(o.Expiry) || back.Region != "eu" ||
		back.BillingInterval != 10*time.Second || len(back.Addrs) != 1 || !back.Addrs[0].Equal(o.Addrs[0]) {
		t.Fatalf("round trip lost data: %+v", back)
	}
}

func TestSignOpen(t *testing.T) {
	key, id := newKey(t)
	otherKey, otherID := newKey(t)
	valid := func() *Offer { return sample(id) }

	env, err := Sign(valid(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(env, t0.Add(time.Minute)); err != nil {
		t.Fatalf("valid offer refused: %v", err)
	}

	// A key that is not the seller's cannot sign for it...
	if _, err := Sign(valid(), otherKey); err == nil {
		t.Fatal("Sign accepted another peer's key")
	}
	// ...and an envelope sealed by hand with it is refused on open.
	forged, err := record.Seal(valid(), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := forged.Marshal()
	if _, err := Open(fb, t0); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("forged offer: got %v, want ErrWrongKey", err)
	}
	_ = otherID

	tamper := append([]byte(nil), env...)
	tamper[len(tamper)-5] ^= 0xff
	if _, err := Open(tamper, t0); err == nil {
		t.Fatal("tampered envelope accepted")
	}

	cases := []struct {
		name string
		mut  func(o *Offer)
		at   time.Time
		want error
	}{
		{"expired", func(o *Offer) {}, t0.Add(11 * time.Minute), ErrExpired},
		{"ttl too long", func(o *Offer) { o.Expiry = o.Issued.Add(MaxTTL + time.Second) }, t0, ErrInvalid},
		{"future issue", func(o *Offer) { o.Issued = t0.Add(time.Hour); o.Expiry = t0.Add(90 * time.Minute) }, t0, ErrInvalid},
		{"zero seq", func(o *Offer) { o.Seq = 0 }, t0, ErrInvalid},
		{"bad version", func(o *Offer) { o.Version = 9 }, t0, ErrInvalid},
		{"min above max", func(o *Offer) { o.MinDuration = 2 * o.MaxDuration }, t0, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := valid()
			c.mut(o)
			env, err := Sign(o, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Open(env, c.at); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}

	if _, err := Open(make([]byte, MaxEnvelopeSize+1), t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: got %v", err)
	}
	if _, err := Open([]byte("garbage"), t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("garbage: got %v", err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	_, id := newKey(t)
	good, _ := sample(id).MarshalRecord()
	cases := map[string][]byte{
		"truncated": good[:len(good)-1],
		// An unknown field is skipped (a newer version's: TestFutureOffer),
		// unless it is critical or malformed.
		"critical unknown field":  append(append([]byte(nil), good...), 0x80, 0x40, 0x01), // field 1024 varint
		"truncated unknown field": append(append([]byte(nil), good...), 0xf8, 0x01),       // field 31 varint, no value
		"repeated seq":            append(append([]byte(nil), good...), 19<<3, 1),
		"wrong wiretype":          {fSeller<<3 | 0, 1},
		"bad seller":              {fSeller<<3 | 2, 2, 0xff, 0xff},
		"bad key length":          {fPaymentKey<<3 | 2, 1, 2},
		"huge duration":           {fMinDur << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"too large":               make([]byte, MaxPayloadSize+1),
	}
	for name, b := range cases {
		var o Offer
		if err := o.UnmarshalRecord(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	var many []byte
	for i := 0; i <= MaxAddrs; i++ {
		a := ma.StringCast("/ip4/10.0.0.1/tcp/1").Bytes()
		many = append(many, fAddrs<<3|2, byte(len(a)))
		many = append(many, a...)
	}
	var o Offer
	if err := o.UnmarshalRecord(many); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many addrs: got %v", err)
	}
}

func TestValidatorSelectsHighestValidSequence(t *testing.T) {
	key, id := newKey(t)
	otherKey, otherID := newKey(t)
	v := Validator{Now: func() time.Time { return t0 }}
	mk := func(seq uint64) []byte {
		o := sample(id)
		o.Seq = seq
		env, err := Sign(o, key)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	key1 := DHTKey(id)
	if err := v.Validate(key1, mk(5)); err != nil {
		t.Fatal(err)
	}
	// A valid offer of another seller under this seller's key is refused.
	o := sample(otherID)
	envOther, _ := Sign(o, otherKey)
	if err := v.Validate(key1, envOther); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("offer under wrong key: %v", err)
	}
	if err := v.Validate("/blackbox/offer/notapeer", mk(1)); err == nil {
		t.Fatal("bad key accepted")
	}
	i, err := v.Select(key1, [][]byte{mk(3), envOther, mk(9), []byte("junk"), mk(7)})
	if err != nil || i != 2 {
		t.Fatalf("Select = %d, %v; want 2", i, err)
	}
	if _, err := v.Select(key1, [][]byte{[]byte("junk")}); err == nil {
		t.Fatal("Select of only invalid values succeeded")
	}
}

func TestFilterAndBuckets(t *testing.T) {
	_, id := newKey(t)
	o := sample(id) // 4 cores, 8 GiB, eu, 200 sat/core-h, 20 sat/GiB-h
	cases := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Min: Resources{CPUMillis: 4000}}, true},
		{Filter{Min: Resources{CPUMillis: 4001}}, false},
		{Filter{Min: Resources{MemoryBytes: 9 << 30}}, false},
		{Filter{Region: "EU"}, true},
		{Filter{Region: "us"}, false},
		{Filter{MaxPrice: 200}, true},
		{Filter{MaxPrice: 199}, false},
		{Filter{Min: Resources{CPUMillis: 2000, MemoryBytes: 1 << 30}, MaxPrice: 420}, true},
		{Filter{Min: Resources{CPUMillis: 2000, MemoryBytes: 1 << 30}, MaxPrice: 419}, false},
		{Filter{Runtime: "runsc"}, false},
	}
	for i, c := range cases {
		if got := c.f.Match(o); got != c.want {
			t.Errorf("case %d %+v: Match = %v", i, c.f, got)
		}
		if c.want {
			if b := QueryBucket(c.f); !containsBucket(SellerBuckets(o), b) {
				t.Errorf("case %d: matching offer not in query bucket %s (%v)", i, b, SellerBuckets(o))
			}
		}
	}
	if QueryBucket(Filter{Min: Resources{CPUMillis: 3000}}) != "cpu>=2" {
		t.Errorf("3 cores should query cpu>=2, got %s", QueryBucket(Filter{Min: Resources{CPUMillis: 3000}}))
	}
	zero := sample(id)
	zero.Resources.CPUMillis = 0
	if (Filter{}).Match(zero) || SellerBuckets(zero) != nil {
		t.Error("an offer with no CPU must match nothing and be in no bucket")
	}
}

func containsBucket(bs []Bucket, b Bucket) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

func TestDiscovererRefusesReplayedSequence(t *testing.T) {
	key, id := newKey(t)
	d := NewDiscoverer(DiscovererConfig{Now: func() time.Time { return t0 }})
	mk := func(seq uint64) []byte {
		o := sample(id)
		o.Seq = seq
		env, _ := Sign(o, key)
		return env
	}
	if _, err := d.Verify(id, mk(10)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verify(id, mk(10)); err != nil {
		t.Fatalf("same sequence again: %v", err)
	}
	if _, err := d.Verify(id, mk(9)); !errors.Is(err, ErrStaleSeq) {
		t.Fatalf("older sequence: got %v, want ErrStaleSeq", err)
	}
	_, other := newKey(t)
	if _, err := d.Verify(other, mk(11)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("offer served by another peer: got %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	key, id := newKey(f)
	env, _ := Sign(sample(id), key)
	payload, _ := sample(id).MarshalRecord()
	f.Add(env)
	f.Add(payload)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, err := Open(b, t0); err == nil {
			// Anything accepted must re-encode within limits and verify again.
			if _, err := o.MarshalRecord(); err != nil {
				t.Fatalf("accepted offer does not re-encode: %v", err)
			}
		}
		var o Offer
		if err := o.UnmarshalRecord(b); err == nil {
			if _, err := o.MarshalRecord(); err != nil {
				t.Fatalf("decoded offer does not re-encode: %v", err)
			}
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
