package contract

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// heldErr is a payments' refusal carrying the update the seller holds.
type heldErr struct{ held []byte }

func (e heldErr) Error() string      { return "update for c: stale update: seq 2, have 2" }
func (e heldErr) HeldUpdate() []byte { return e.held }

// heldPay is a buyer's payer that adopts the update "held" (and refuses
// any other, as its payments refuse one that is not its own).
type heldPay struct {
	*fakePay
	mu      sync.Mutex
	adopted []string
}

func (p *heldPay) Reestablish(ctx context.Context, seller peer.ID, held []byte) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.adopted = append(p.adopted, string(held))
	if string(held) != "held" {
		return "", errors.New("held update: signature does not verify")
	}
	return "chan", nil
}

var _ HeldLearner = (*heldPay)(nil)

// TestHeldUpdateAdoptedAndRetried: the seller refuses the first payment
// with the update it holds (the buyer lost it in a crash); the buyer
// adopts it, asks the same seller again and the job is done; the refused
// contract is the buyer's fault, never evidence against the seller. A held
// update the buyer's payments refuse fails the job as before, and is not
// tried again.
func TestHeldUpdateAdoptedAndRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		held string
		done bool
	}{{"adopted", "held", true}, {"refused", "forged", false}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMarket(t)
			refused := 0
			pay := &fakePay{}
			pay.refuse = func(string) error {
				if refused > 0 {
					return nil
				}
				refused++
				return heldErr{[]byte(tc.held)}
			}
			_, hs := m.seller(&fakeRunner{}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000)
			rep := &recRep{}
			hp := &heldPay{fakePay: pay}
			b, _ := m.buyer(hp, func(c *BuyerConfig) { c.Reputation = rep })
			m.connect()
			id, err := b.Submit(context.Background(), m.request(2))
			if err != nil {
				t.Fatal(err)
			}
			j := waitJob(t, b, id)
			hp.mu.Lock()
			adopted := append([]string(nil), hp.adopted...)
			hp.mu.Unlock()
			if len(adopted) != 1 || adopted[0] != tc.held {
				t.Fatalf("held updates given to the payments: %q", adopted)
			}
			if done := j.State == JobDone; done != tc.done {
				t.Fatalf("job %s (%s), attempts %+v", j.State, j.Error, j.Attempts)
			}
			want := 1
			if tc.done {
				want = 2
			}
			if len(j.Attempts) != want || j.Attempts[0].Fault != FaultBuyer {
				t.Fatalf("attempts %+v; want %d, the first the buyer's fault", j.Attempts, want)
			}
			for _, o := range rep.outcomes() {
				if o.seller == hs.ID() && o.fault == FaultSeller {
					t.Fatalf("the refusal was recorded against the seller: %v", rep.outcomes())
				}
			}
		})
	}
}
