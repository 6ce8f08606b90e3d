package contract

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// fakePeer is a valid peer ID made from i (no key behind it).
func fakePeer(t testing.TB, i int) peer.ID {
	t.Helper()
	sum := sha256.Sum256([]byte(fmt.Sprint(i)))
	m, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil {
		t.Fatal(err)
	}
	return peer.ID(m)
}

func countUnreach(t *testing.T, s Store) (n int) {
	t.Helper()
	_ = s.View(func(kv KV) error {
		return kv.ForEach(bucketUnreach, "", func(string, []byte) error { n++; return nil })
	})
	return n
}

// TestUnreachableBounded: the bucket keeps at most maxUnreachKept sellers,
// evicting the soonest to expire, and drops expired ones when written.
func TestUnreachableBounded(t *testing.T) {
	s := NewMemStore()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	// Seller i is ranked last until now+i minutes; seller 0's time is up.
	if err := s.Update(func(kv KV) error {
		for i := range maxUnreachKept + 10 {
			if err := kv.Put(bucketUnreach, string(fakePeer(t, i)), encodeUnreach(now.Add(time.Duration(i)*time.Minute))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var kept map[peer.ID]time.Time
	if err := s.Update(func(kv KV) (err error) {
		kept, err = pruneUnreach(kv, now, func(err error) { t.Errorf("no entry is corrupt: %v", err) })
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(kept) != maxUnreachKept || countUnreach(t, s) != maxUnreachKept {
		t.Fatalf("kept %d, stored %d; want %d", len(kept), countUnreach(t, s), maxUnreachKept)
	}
	// 1 expired, the next 9 soonest to expire evicted.
	for i := range 10 {
		if _, ok := kept[fakePeer(t, i)]; ok {
			t.Fatalf("seller %d kept; the expired and the soonest to expire go first", i)
		}
	}
	if until, ok := kept[fakePeer(t, maxUnreachKept+9)]; !ok || !until.Equal(now.Add(time.Duration(maxUnreachKept+9)*time.Minute)) {
		t.Fatalf("the latest to expire: %v %v", until, ok)
	}
}

// TestUnreachableCorruptEntrySkipped: an entry that does not decode is
// logged and dropped; the buyer starts, and the good entries are kept.
func TestUnreachableCorruptEntrySkipped(t *testing.T) {
	m := newMarket(t)
	s := NewMemStore()
	clock := NewTestClock(time.Now())
	good := fakePeer(t, 1)
	until := clock.Now().Add(time.Minute)
	if err := s.Update(func(kv KV) error {
		for k, v := range map[string][]byte{
			string(good):           encodeUnreach(until),
			"not a peer":           encodeUnreach(until),
			string(fakePeer(t, 2)): []byte("short"),
			string(fakePeer(t, 3)): make([]byte, 8),
			string(fakePeer(t, 4)): bytes.Repeat([]byte{0xff}, 8),
		} {
			if err := kv.Put(bucketUnreach, k, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h := m.host()
	b, err := NewBuyer(BuyerConfig{Host: h, Key: h.Peerstore().PrivKey(h.ID()), Store: s, Payer: &fakePay{},
		PaymentKey: bytes.Repeat([]byte{2}, 33), ResultDir: t.TempDir(), Clock: clock,
		Log:  slog.New(slog.NewTextHandler(&logs, nil)),
		Find: func(context.Context, offer.Filter) ([]*offer.Offer, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("a corrupt entry must not stop the buyer: %v", err)
	}
	defer b.Close()
	if got := b.Unreachable(); len(got) != 1 || !got[good].Equal(until) {
		t.Fatalf("listed %v, want only %s", got, good)
	}
	if n := strings.Count(logs.String(), "does not decode"); n != 4 {
		t.Fatalf("%d log lines for 4 corrupt entries:\n%s", n, logs.String())
	}
	if n := countUnreach(t, s); n != 1 {
		t.Fatalf("%d entries stored, want the corrupt ones dropped", n)
	}
}

// FuzzDecodeUnreach: whatever a damaged database holds, decoding never
// panics, and what decodes encodes back to the same bytes.
func FuzzDecodeUnreach(f *testing.F) {
	f.Add(string(fakePeer(f, 1)), encodeUnreach(time.Unix(1e9, 5)))
	f.Add("", []byte{})
	f.Add("\x12\x20", make([]byte, 8))
	f.Add(string(fakePeer(f, 2)), []byte{0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		p, until, err := decodeUnreach(key, v)
		if err != nil {
			return
		}
		if string(p) != key || !bytes.Equal(encodeUnreach(until), v) {
			t.Fatalf("%x %x decodes to %s %s, which does not encode back", key, v, p, until)
		}
	})
}
