package contract

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
)

// The contract rule: no channel is funded, no payment made and no image
// sent until buyer and seller hold a connection that can carry the
// contract. A direct connection can; a relayed (circuit v2) connection the
// relay limits can only when its limits fit what the contract moves and how
// long it lasts. Negotiation is small and may use a limited connection
// (the seller's side, seeing a relayed inbound connection, starts a DCUtR
// hole punch meanwhile); the job stream, which carries the image, the
// payments and the outputs, may not, unless the limits fit.
//
// Streams and what they may use:
//
//	/blackbox/negotiate/1.0.0   any connection, limited included
//	/blackbox/job/1.x.0         a direct one, or a limited one whose limits fit

// DefaultDirectWait is how long a buyer waits, after an acceptance over a
// relayed connection, for a direct connection to the seller.
const DefaultDirectWait = 15 * time.Second

// DefaultUnreachableFor is how long a buyer ranks a seller it could not
// reach behind the others.
const DefaultUnreachableFor = 10 * time.Minute

// transferMargin is what a contract's control traffic (contract, channel
// open, payments, heartbeats, receipt) adds to its data, each way.
const transferMargin = 1 << 20

// Need is what a contract asks of a connection: the bytes each way and
// how long it must last.
type Need struct {
	// Up is what the buyer sends (image, inputs, payments); Down what the
	// seller sends back (outputs, logs, the receipt).
	Up, Down int64
	// Duration is how long the connection must stay up from now.
	Duration time.Duration
}

// NeedOf is what p's contract asks of a connection when each of the
// three outputs may be up to outputCap bytes.
func NeedOf(p *Proposal, outputCap int64) Need {
	req := &p.Request
	up := int64(req.ImageSize) + transferMargin
	for _, in := range req.Inputs {
		up += int64(in.Size)
	}
	return Need{Up: up, Down: 3*outputCap + transferMargin, Duration: req.Duration + time.Minute}
}

// Carries reports whether c can carry a contract that needs n at now: a
// connection without limits always can; a limited (relayed) one only when
// the relay said its limits and what is left of them covers n. A limit of
// zero is none.
func Carries(c network.Conn, n Need, now time.Time) bool {
	st := c.Stat()
	if !st.Limited {
		return true
	}
	d, okD := st.Extra[client.StatLimitDuration].(time.Duration)
	data, okB := st.Extra[client.StatLimitData].(uint64)
	if !okD && !okB {
		return false // limited, limits unknown
	}
	if okD && d > 0 && d-now.Sub(st.Opened) < n.Duration {
		return false
	}
	if okB && data > 0 && (uint64(max(n.Up, 0)) > data || uint64(max(n.Down, 0)) > data) {
		return false
	}
	return true
}

// reachKind is how the buyer holds a seller for a contract.
type reachKind int

// How the buyer holds a seller.
const (
	// reachNone: no connection that can carry the contract.
	reachNone reachKind = iota
	// reachDirect: a connection without limits.
	reachDirect
	// reachRelayFits: only limited connections, one of whose limits fit.
	reachRelayFits
)

// reachOf classifies the live connections to p for a contract needing n.
func reachOf(conns []network.Conn, n Need, now time.Time) reachKind {
	r := reachNone
	for _, c := range conns {
		if c.IsClosed() {
			continue
		}
		if !c.Stat().Limited {
			return reachDirect
		}
		if Carries(c, n, now) {
			r = reachRelayFits
		}
	}
	return r
}

// errNoCarrier marks the buyer's refusal of a seller it could not hold a
// connection to that carries the contract (reason "unreachable").
var errNoCarrier = errors.New("no connection that can carry the contract")

// errUnreachableSeller is that refusal: the seller's fault it is not.
func errUnreachableSeller(seller peer.ID, wait time.Duration) error {
	return withFault(FaultUnreachable, fmt.Errorf("%s: seller %s: %w: no direct connection within %s (hole punching failed or the seller is behind a NAT that allows none), and no relayed one whose limits fit; nothing was funded, paid or sent",
		ReasonUnreachable, seller, errNoCarrier, wait))
}

// reach waits, at most DirectWait, for a connection to seller that carries
// n: a direct one (dialling the seller's direct addresses again while
// libp2p's hole punching runs on its own), or a relayed one whose limits
// fit. It returns whether the job stream must be allowed on a limited
// connection, or errUnreachableSeller.
func (b *Buyer) reach(ctx context.Context, seller peer.ID, n Need) (bool, error) {
	wait := b.cfg.DirectWait
	deadline := time.Now().Add(wait)
	net := b.cfg.Host.Network()
	for {
		switch reachOf(net.ConnsToPeer(seller), n, time.Now()) {
		case reachDirect:
			return false, nil
		case reachRelayFits:
			return true, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, errUnreachableSeller(seller, wait)
		}
		dctx, cancel := context.WithTimeout(ctx, min(left, 5*time.Second))
		err := b.cfg.Host.Connect(network.WithForceDirectDial(dctx, "blackbox contract"), peer.AddrInfo{ID: seller})
		cancel()
		if err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(min(time.Until(deadline), 250*time.Millisecond)):
		}
	}
}

// markUnreachable remembers, per seller, until when the buyer ranks it behind
// the others, in memory and in the store (unreach.go), so that a restart
// does not forget it.
func (b *Buyer) markUnreachable(p peer.ID) {
	until := b.clock.Now().Add(b.cfg.UnreachableFor)
	b.mu.Lock()
	b.unreach[p] = until
	b.mu.Unlock()
	b.saveUnreachable(p, until)
}

// behindUnreachable moves the sellers recently found unreachable to the
// end of cands, keeping both parts' order. Caller holds b.mu.
func (b *Buyer) behindUnreachable(cands []Candidate) []Candidate {
	if len(b.unreach) == 0 {
		return cands
	}
	now := b.clock.Now()
	var ok, late []Candidate
	for _, c := range cands {
		if until, bad := b.unreach[c.Seller]; bad && now.Before(until) {
			late = append(late, c)
			continue
		} else if bad {
			delete(b.unreach, c.Seller)
		}
		ok = append(ok, c)
	}
	return append(ok, late...)
}

// Unreachable lists the sellers this buyer ranks last because it could not
// reach them, with until when.
func (b *Buyer) Unreachable() map[peer.ID]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	out := map[peer.ID]time.Time{}
	for p, t := range b.unreach {
		if now.Before(t) {
			out[p] = t
		}
	}
	return out
}
