package contract

import (
	"errors"
	"fmt"
)

// Fault says how a contract ended as the buyer sees it, and so whose fault
// a failure was: what the reputation book may hold against the seller. The
// buyer engine decides it where it knows (the step that failed), never
// from an error's text.
type Fault uint8

// Faults.
const (
	// FaultNone: the seller delivered (a verified receipt; the job's own
	// exit code does not matter).
	FaultNone Fault = iota
	// FaultSeller: the seller failed the contract: its sandbox failed,
	// it stopped the job itself, it refused for a reason of its own, or it
	// broke the protocol.
	FaultSeller
	// FaultSellerGone: the seller vanished mid-contract (the stream broke,
	// a heartbeat was missed).
	FaultSellerGone
	// FaultSellerLied: the seller's receipt does not match what it sent or
	// what it was paid.
	FaultSellerLied
	// FaultBuyer: this node's own failure (wallet, funding, image, inputs,
	// result dir, store) or a refusal of the buyer's input by the seller.
	// Nothing counts against the seller, and other sellers would fail the
	// same way: the job stops.
	FaultBuyer
	// FaultUnreachable: the seller could not be reached before anything
	// was at stake; the network may be this node's.
	FaultUnreachable
	// FaultCancelled: the user cancelled before the seller delivered.
	FaultCancelled
)

var faultNames = [...]string{"none", "seller", "seller_gone", "seller_lied", "buyer", "unreachable", "cancelled"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("fault(%d)", uint8(f))
}

// MarshalText implements encoding.TextMarshaler (JSON shows the name).
func (f Fault) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Fault) UnmarshalText(b []byte) error {
	for i, n := range faultNames {
		if n == string(b) {
			*f = Fault(i)
			return nil
		}
	}
	return fmt.Errorf("unknown fault %q", b)
}

// Sentinel errors of the faults: a failed job's error wraps one, and
// callers branch with errors.Is (as with containerd's errdefs).
var (
	ErrSellerFault = errors.New("seller failed")
	ErrSellerGone  = errors.New("seller vanished")
	ErrSellerLied  = errors.New("seller's receipt does not match")
	ErrBuyerFault  = errors.New("buyer's own failure")
	ErrUnreachable = errors.New("seller unreachable")
	ErrCancelled   = errors.New("cancelled")
)

var faultErrs = [...]error{nil, ErrSellerFault, ErrSellerGone, ErrSellerLied, ErrBuyerFault, ErrUnreachable, ErrCancelled}

// faultError marks err with a fault; its text is err's.
type faultError struct {
	f   Fault
	err error
}

func (e *faultError) Error() string { return e.err.Error() }
func (e *faultError) Unwrap() error { return e.err }
func (e *faultError) Is(target error) bool {
	return int(e.f) < len(faultErrs) && faultErrs[e.f] != nil && target == faultErrs[e.f]
}

// withFault marks err (nil stays nil); an error already marked keeps its
// first, innermost fault.
func withFault(f Fault, err error) error {
	if err == nil {
		return nil
	}
	var fe *faultError
	if errors.As(err, &fe) {
		return err
	}
	return &faultError{f: f, err: err}
}

func sellerFault(err error) error { return withFault(FaultSeller, err) }
func sellerGone(err error) error  { return withFault(FaultSellerGone, err) }
func buyerFault(err error) error  { return withFault(FaultBuyer, err) }

// FaultOf returns the fault err carries: FaultNone for nil, FaultSeller
// for an error no step marked (a failure the buyer cannot place is
// counted against the seller, as before typed faults).
func FaultOf(err error) Fault {
	if err == nil {
		return FaultNone
	}
	var fe *faultError
	if errors.As(err, &fe) {
		return fe.f
	}
	if errors.Is(err, ErrCancelled) {
		return FaultCancelled
	}
	return FaultSeller
}
