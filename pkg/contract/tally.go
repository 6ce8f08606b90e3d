package contract

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// A service contract's bytes are billed each interval, not only at its
// end (a long contract would leave its seller carrying every forwarded
// byte unpaid until then). The rule, on a job stream that bills bytes
// (1.3.0 and later) of a service contract:
//
//   - Each heartbeat (jBeat: uvarint n, "pay for interval n+1") carries,
//     after its count, a tally: an encoded Bill of the bytes moved so far
//     both ways (the job's stdout and stderr as sent, the image and inputs
//     as received, and every forwarded connection's bytes), their price,
//     Intervals = n+1 and Total = Owed(n+1) + the bytes' amount. A beat
//     without a tally (batch jobs, older sellers, the beat a resumed
//     stream gets) asks for the intervals alone, as before. Older buyers
//     read the count and ignore what follows it.
//   - The buyer checks the tally against its own counts (it reads and
//     writes the same bytes): the price must be the seller's Ready price,
//     and neither count may exceed the buyer's by more than forwardSlack
//     per forward stream open or broken, plus one (bytes in flight: a
//     stream's receive window). Fewer bytes than the buyer counts are
//     fine (they moved after the tally was made: the next one bills
//     them). It then pays Total with the interval (never beyond the
//     contract's max price). A tally beyond the tolerance is refused: the
//     contract fails as the seller's fault, which the reputation book
//     holds against it, as a bill over-claiming a job's egress is.
//   - The seller counts interval n+1 paid only when the payment also
//     covers that tally, so a buyer that stops paying for bytes is stopped
//     as one that stops paying for time (within the same grace).
//   - The bill at the end still bills every byte: what the tallies
//     already collected is part of its cumulative Total.

// tallyTamper, when set (tests), changes each tally a seller makes
// before it is sent: a seller that over-claims.
var tallyTamper atomic.Pointer[func(*Bill)]

// tallies are the amounts (sats of bytes moved) a seller asked with its
// beats: the intervals they asked for, in order.
type tallies struct {
	at []tallyAt
}

type tallyAt struct {
	n      uint64
	egress int64
}

// ask records that interval n was asked for with egress sats of bytes.
func (t *tallies) ask(n uint64, egress int64) {
	if k := len(t.at); k > 0 && t.at[k-1].n >= n {
		t.at[k-1].egress = max(t.at[k-1].egress, egress)
		return
	}
	t.at = append(t.at, tallyAt{n, egress})
}

// of is what interval n must pay for bytes: the tally of the last beat
// that asked for n or an earlier interval (tallies only grow).
func (t *tallies) of(n uint64) int64 {
	var e int64
	for _, a := range t.at {
		if a.n > n {
			break
		}
		e = max(e, a.egress)
	}
	return e
}

// drop forgets the tallies before interval n but the one n goes by.
func (t *tallies) drop(n uint64) {
	i := 0
	for i+1 < len(t.at) && t.at[i+1].n <= n {
		i++
	}
	t.at = t.at[i:]
}

// owes is what the contract's first n intervals owe with the bytes their
// beats asked for.
func (l *liveJob) owes(n uint64) int64 { return l.ct.Proposal.Owed(n) + l.tally.of(n) }

// beat is the heartbeat payload that asks for interval n+1: for a service
// contract that bills bytes, with the tally of the bytes moved so far.
func (l *liveJob) beat(n uint64) []byte {
	b := binary.AppendUvarint(nil, n)
	if !billsEgress(l.proto()) || l.ct.Proposal.Request.Service == nil || n+1 > l.ct.Proposal.Intervals() {
		return b
	}
	var sent int64
	for _, w := range l.outs {
		w.mu.Lock()
		sent += w.at
		w.mu.Unlock()
	}
	var fwOut, fwIn int64
	if sv := l.s.services.get(l.id); sv != nil {
		fwOut, fwIn = sv.out.Load(), sv.in.Load()
	}
	bl := Bill{EgressBytes: uint64(sent + fwOut), IngressBytes: uint64(l.rxBytes + fwIn), EgressPrice: l.egressPrice, Intervals: n + 1}
	if f := tallyTamper.Load(); f != nil {
		(*f)(&bl)
	}
	moved, _ := bl.Moved() // counts of bytes that moved: no overflow
	bl.Egress = EgressSats(moved, bl.EgressPrice)
	bl.Total = l.ct.Proposal.Owed(n+1) + bl.Egress
	l.tally.ask(n+1, bl.Egress)
	return append(b, marshalBill(bl)...)
}

// parseBeat decodes a seller's jBeat frame: the intervals delivered and,
// when one follows the count, the tally of the bytes moved so far.
func parseBeat(b []byte) (n uint64, tally *Bill, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, fmt.Errorf("%w: heartbeat", ErrMalformed)
	}
	if len(b) == k {
		return n, nil, nil
	}
	bl, err := unmarshalBill(b[k:])
	if err != nil {
		return 0, nil, fmt.Errorf("heartbeat tally: %w", err)
	}
	if n == ^uint64(0) || bl.Intervals != n+1 {
		return 0, nil, fmt.Errorf("%w: heartbeat for interval %d with a tally for %d", ErrMalformed, n+1, bl.Intervals)
	}
	return n, &bl, nil
}

// payBeat pays for interval n+1 after the seller's beat: with the bytes
// its tally bills, once checked against the buyer's own counts (received
// is what came of the job's outputs).
func (r *buyerRun) payBeat(ctx context.Context, n uint64, tally *Bill, received uint64) error {
	if tally == nil {
		return r.pay(ctx, n+1)
	}
	p := r.ct.Proposal
	switch {
	case !billsEgress(r.st.Protocol()) || p.Request.Service == nil:
		return sellerFault(fmt.Errorf("%w: a tally of bytes moved in a contract that is not a service's", ErrMalformed))
	case tally.EgressPrice != r.egressPrice:
		return sellerFault(fmt.Errorf("%w: tally at %d msat/GiB, the seller said %d", ErrInvalid, tally.EgressPrice, r.egressPrice))
	case tally.Total != p.Owed(tally.Intervals)+tally.Egress:
		return sellerFault(fmt.Errorf("%w: tally of %d sat for %d interval(s) and %d sat of bytes moved", ErrInvalid, tally.Total, tally.Intervals, tally.Egress))
	}
	recv, sent, slack := r.counted(received)
	switch {
	case tally.EgressBytes > recv+slack:
		return sellerFault(fmt.Errorf("%w: tally for %d bytes of egress, %d arrived (tolerance %d)", ErrInvalid, tally.EgressBytes, recv, slack))
	case tally.IngressBytes > sent+slack:
		return sellerFault(fmt.Errorf("%w: tally for %d bytes of image, inputs and forwards, %d were sent (tolerance %d)", ErrInvalid, tally.IngressBytes, sent, slack))
	}
	total := tally.Total
	if limit := p.Request.MaxPrice; limit > 0 && uint64(total) > limit {
		// The contract's cap: the seller gets no more, and ends the
		// contract when the bytes go unpaid (the slot starts another).
		total = max(int64(limit), p.Owed(n+1))
		r.b.log.Warn("bytes moved beyond the contract's max price", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "tally_sats", tally.Total, "paying_sats", total)
	}
	return r.payTotal(ctx, total, n+1, fmt.Sprintf("interval %d and bytes moved", n+1))
}

// unbilledEgressOK checks the bytes moved of a receipt that came with no
// bill: a seller that stopped the job itself (unpaid, after the buyer's
// cancel) bills what it was paid, and the buyer paid a service's bytes on
// the tallies it checked (payBeat). The receipt's bytes are within what
// the buyer counted both ways (and the forwards' slack), at no more than
// the contract's price; rc.Billed against what was paid is finish's check.
func (r *buyerRun) unbilledEgressOK(rc *Receipt, received uint64) bool {
	if rc.Egress == 0 {
		return true
	}
	if !billsEgress(r.st.Protocol()) {
		return false
	}
	recv, sent, slack := r.counted(received)
	return rc.EgressBytes <= recv+sent+2*slack && rc.Egress <= EgressSats(rc.EgressBytes, r.egressPrice)
}

// counted is what the buyer counted of the bytes a contract moved: recv
// (of the outputs, received, and what its forwards read from the seller),
// sent (of the image and inputs, and what its forwards wrote to the
// seller), and how far the seller's counts may be from them: forwardSlack
// per forward stream that broke or is open, and one more (the bytes of
// streams that ended as the seller counted). With no forward at all, the
// counts are exact.
func (r *buyerRun) counted(received uint64) (recv, sent, slack uint64) {
	recv, sent = received, r.sentBytes
	sv := r.b.serviceOfJob(r.j.ID)
	if sv == nil {
		return recv, sent, 0
	}
	sv.mu.Lock()
	n := sv.counts[r.ct.ID]
	sv.mu.Unlock()
	if n == nil {
		return recv, sent, 0
	}
	return recv + uint64(n.in.Load()), sent + uint64(n.out.Load()), forwardSlack * uint64(n.broken.Load()+n.open()+1)
}

// received is what came of a job's outputs.
func received(files map[byte]*resultFile) uint64 {
	var n uint64
	for _, rf := range files {
		n += uint64(rf.n)
	}
	return n
}
