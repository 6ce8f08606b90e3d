package contract

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Bytes moved are billed (job protocol 1.3.0), both ways, at one price.
// The rule:
//
//   - Egress is what the seller sends the buyer: the bytes of stdout,
//     stderr and out.tar as they travel in the job stream's frames.
//     Ingress is what the buyer sends the seller: the image (when it is
//     really sent: an image the seller holds is not, and costs nothing)
//     and the inputs, as they travel in jBlob frames. Framing and control
//     frames are not counted either way.
//   - Both are billed together at the egress price of the seller's offer
//     (offer.Prices.EgressGiB, msat per GiB, GiB = 2^30 bytes) when the
//     contract was accepted: EgressSats(egress + ingress bytes), in whole
//     sats rounded down, so a bill never exceeds bytes × price (a job's
//     few KiB of logs cost nothing rather than a whole sat). The name
//     stays "egress" because it is the seller's link the bytes cross.
//   - The seller says its price in the Ready frame, before anything is
//     sent or paid; the buyer refuses a price above the offer it chose.
//   - When the job has ended, the seller sends a Bill: the bytes it sent,
//     the bytes it received, their price in sats and the total it asks
//     (the intervals started plus the bytes). The buyer checks both byte
//     counts against what it received and what it sent, and the amount
//     against the price, and pays up to the total with one more payment
//     update, never beyond the job's --max-price. The receipt then
//     carries the bytes moved both ways and their amount, and bills at
//     most what was paid.
//   - With a 1.2.0 or 1.1.0 peer nothing of this happens: no bytes are
//     billed.
//   - A service's contract also bills its bytes so far with each interval
//     (tally.go): the bill at its end then asks only for what is left.

// jBill is the seller's bill at the end of a 1.3.0 job, before the receipt.
const jBill byte = 28

// billsEgress reports whether a job stream of proto bills egress.
func billsEgress(proto protocol.ID) bool { return proto == JobProtocol || proto == JobProtocol13 }

// hasReady reports whether a job stream of proto carries an encoded Ready.
func hasReady(proto protocol.ID) bool {
	return proto == JobProtocol || proto == JobProtocol13 || proto == JobProtocol12
}

// EgressSats is what bytes cost at msatPerGiB (millisats per 2^30 bytes),
// in whole sats rounded down; it saturates instead of overflowing.
func EgressSats(bytes, msatPerGiB uint64) int64 {
	hi, lo := bits.Mul64(bytes, msatPerGiB)
	if hi >= 1<<30 {
		return maxSats
	}
	msat, _ := bits.Div64(hi, lo, 1<<30)
	sat := msat / 1000
	if sat > maxSats {
		return maxSats
	}
	return int64(sat)
}

// maxSats is 21 million bitcoin: no bill is larger.
const maxSats = 21e14

// Bill is the seller's jBill frame.
type Bill struct {
	// EgressBytes is what the seller sent of stdout, stderr and out.tar.
	EgressBytes uint64
	// EgressPrice is the price it billed the bytes moved at, msat per GiB.
	EgressPrice uint64
	// Egress is EgressSats(EgressBytes+IngressBytes, EgressPrice): what
	// the bytes moved both ways cost.
	Egress int64
	// Intervals is how many billing intervals were started.
	Intervals uint64
	// Total is what the seller asks in all for the contract, in sats:
	// the intervals started plus the bytes moved.
	Total int64
	// IngressBytes is what the seller received of the image and inputs.
	IngressBytes uint64
}

// Moved is the bytes the bill is for, both ways; ok is false when their
// sum does not fit in 64 bits (no real transfer does).
func (b Bill) Moved() (bytes uint64, ok bool) {
	sum, carry := bits.Add64(b.EgressBytes, b.IngressBytes, 0)
	return sum, carry == 0
}

const maxBillSize = 128

// Bill frame fields.
const (
	blEgressBytes protowire.Number = 1 + iota
	blEgressPrice
	blEgress
	blIntervals
	blTotal
	blIngressBytes
)

var billSchema = wire.Schema{Max: maxBillSize, Ordered: true, Fields: []wire.Spec{
	blEgressBytes: varintField, blEgressPrice: varintField, blEgress: varintField, blIntervals: varintField, blTotal: varintField,
	blIngressBytes: varintField,
}}

func marshalBill(b Bill) []byte {
	var w enc
	w.Uint(blEgressBytes, b.EgressBytes)
	w.Uint(blEgressPrice, b.EgressPrice)
	w.Uint(blEgress, uint64(max(b.Egress, 0)))
	w.Uint(blIntervals, b.Intervals)
	w.Uint(blTotal, uint64(max(b.Total, 0)))
	w.Uint(blIngressBytes, b.IngressBytes)
	return w.B
}

// unmarshalBill decodes a seller's jBill frame strictly, and checks that
// its egress amount is its bytes, both ways, at its price.
func unmarshalBill(b []byte) (Bill, error) {
	fields, err := decode("bill", &billSchema, b)
	if err != nil {
		return Bill{}, err
	}
	var bl Bill
	for _, f := range fields {
		switch f.Num {
		case blEgressBytes:
			bl.EgressBytes = f.V
		case blEgressPrice:
			bl.EgressPrice = f.V
		case blEgress, blTotal:
			if f.V > maxSats {
				return Bill{}, fmt.Errorf("decode bill: %w: amount out of range", ErrMalformed)
			}
			if f.Num == blEgress {
				bl.Egress = int64(f.V)
			} else {
				bl.Total = int64(f.V)
			}
		case blIntervals:
			bl.Intervals = f.V
		case blIngressBytes:
			bl.IngressBytes = f.V
		}
	}
	moved, ok := bl.Moved()
	if !ok {
		return Bill{}, fmt.Errorf("decode bill: %w: %d + %d bytes overflow", ErrMalformed, bl.EgressBytes, bl.IngressBytes)
	}
	if want := EgressSats(moved, bl.EgressPrice); bl.Egress != want {
		return Bill{}, fmt.Errorf("decode bill: %w: %d sat for %d bytes (%d sent, %d received) at %d msat/GiB, want %d", ErrMalformed, bl.Egress, moved, bl.EgressBytes, bl.IngressBytes, bl.EgressPrice, want)
	}
	return bl, nil
}

// billWait bounds how long the seller waits for the buyer's payment of a
// bill before it signs the receipt with what it holds: the payment grace,
// at least two seconds. A bill the buyer caps (--max-price) is never paid
// in full and costs this wait.
func billWait(payGrace time.Duration) time.Duration { return max(payGrace, 2*time.Second) }

// throughputMin is the least a transfer must move before its throughput
// says anything about the link (smaller ones end inside buffers).
const throughputMin = 1 << 20

// throughput is bytes over d in bits per second, or 0 when the transfer is
// too small or too quick to say.
func throughput(bytes int64, d time.Duration) float64 {
	if bytes < throughputMin || d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds()
}
