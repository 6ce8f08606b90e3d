package contract

// Open hints: a seller that reads an open message's extension says so in
// its acceptance (Decision.OpenHints), and only then does the buyer's
// payer add the funding's input hints to the open (a light seller finds
// the funding's coins with them, whatever their age: payment/openhints.go).
// An older seller's acceptance does not say so and gets the open as
// before; an older buyer ignores the field and sends no hints.

// OpenHintReader is what a PaymentReceiver may also do: read the
// extension of an open message (the seller then says so in its
// acceptances).
type OpenHintReader interface {
	ReadsOpenHints() bool
}

// OpenHinter is what a Payer may also do: return open (what it prepared)
// with the extension a seller that reads it uses; open as it is when it
// has nothing to add or cannot.
type OpenHinter interface {
	WithOpenHints(open []byte) []byte
}

// readsOpenHints says whether an acceptance of p says the seller reads
// open hints: a channel contract, a receiver that reads them.
func readsOpenHints(r PaymentReceiver, p *Proposal) bool {
	h, ok := r.(OpenHintReader)
	return ok && p.Request.Escrow == "" && h.ReadsOpenHints()
}

// withOpenHints is open with the payer's hints when ct's seller reads
// them.
func withOpenHints(p Payer, ct *Contract, open []byte) []byte {
	h, ok := p.(OpenHinter)
	if !ok || len(open) == 0 || ct.Acceptance == nil || !ct.Acceptance.OpenHints {
		return open
	}
	return h.WithOpenHints(open)
}
