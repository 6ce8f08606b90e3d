package contract

import (
	"fmt"
	"sync/atomic"
)

// paymentKey is the buyer's payment key once the node's wallet was
// replaced while running (SetPaymentKey); unset, the configured one.
type paymentKey struct{ p atomic.Pointer[[]byte] }

func (k *paymentKey) get(configured []byte) []byte {
	if p := k.p.Load(); p != nil {
		return *p
	}
	return configured
}

// SetPaymentKey changes the payment public key the buyer puts in its
// proposals from now on: the node restored another wallet seed while
// running (with no contract under way, so none was made with the old key).
func (b *Buyer) SetPaymentKey(key []byte) error {
	if len(key) != 33 {
		return fmt.Errorf("payment key of %d bytes, want 33", len(key))
	}
	k := append([]byte(nil), key...)
	b.payKey.p.Store(&k)
	return nil
}
