package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// TestPaymentStoreOpensOlderDatabase: a channel database written before
// the payment log (channels committed straight into the payment_channels
// bucket, as every earlier binary did) opens and loads as it was; a newer
// update then goes through the log and is in the bucket after a clean
// close, with no log left behind for an older binary to miss.
func TestPaymentStoreOpensOlderDatabase(t *testing.T) {
	p := newBoltPair(t, 1, false)
	for i := 0; i < 3; i++ {
		p.update(t, 0)
	}
	c, err := p.seller.Channel(p.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := payment.EncodeChannel(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "blackbox.db")
	db, err := store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// What an older binary's PutChannel did.
	if err := db.Update(func(tx *store.Tx) error { return tx.Put("payment_channels", c.ID, raw) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewPaymentStore(db)
	got, err := st.LoadChannels()
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], c) {
		t.Fatalf("loaded %+v, %v; want the channel as written", got, err)
	}
	next := *got[0]
	next.Seq, next.Paid = c.Seq+1, c.Paid+1
	if err := st.PutChannel(&next); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.LoadChannels(); got[0].Seq != next.Seq {
		t.Fatalf("before close, loaded seq %d, want %d", got[0].Seq, next.Seq)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + store.PaylogSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a payment log is left after a clean close: %v", err)
	}
	db, err = store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var inBucket []byte
	_ = db.View(func(tx *store.Tx) error { inBucket = tx.Get("payment_channels", c.ID); return nil })
	back, err := payment.DecodeChannel(inBucket)
	if err != nil || back.Seq != next.Seq {
		t.Fatalf("the bucket holds %+v, %v; want seq %d", back, err, next.Seq)
	}
}
