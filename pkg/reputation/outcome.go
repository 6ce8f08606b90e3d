package reputation

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Outcome is what happened in one contract, from the rater's side. Values are
// stored and signed: they are explicit and never renumbered.
type Outcome uint8

const (
	// OutcomeCompleted: the job ran to the end and the result was accepted.
	OutcomeCompleted Outcome = 1
	// OutcomeLate: the result came, after the contract's deadline.
	OutcomeLate Outcome = 2
	// OutcomeFailed: the seller returned a failure or a result the buyer
	// found unusable.
	OutcomeFailed Outcome = 3
	// OutcomeAbandoned: the seller vanished mid-job.
	OutcomeAbandoned Outcome = 4
	// OutcomeSpotCheckMismatch: the output digest disagreed with the
	// majority of sellers that ran the same deterministic job.
	OutcomeSpotCheckMismatch Outcome = 5
	// OutcomeAbuse: the peer abused a protocol (for example flooded this
	// node with attestations). Local only; never attested.
	OutcomeAbuse Outcome = 6
	// OutcomeInvalid: the seller reported success but the buyer's own
	// validation rejected the output (garbage). Worse than an honest
	// failure: it is a lie about the result.
	OutcomeInvalid Outcome = 7
	// OutcomeVerified: a spot check's majority agreed with the seller's
	// output. The contract's own outcome already counted in the score; this
	// adds no evidence to it, and lengthens the seller's streak of verified
	// results, which lowers how often its jobs are checked (ShouldSpotCheck).
	OutcomeVerified Outcome = 8
	// OutcomeFundingDoubleSpent: a buyer's channel funding was proven
	// double-spent: a block holds a transaction spending one of its
	// inputs. Deliberate fraud against the seller that worked on it: it
	// weighs as a lie about a result does (ten failed contracts). Local
	// only; never attested.
	OutcomeFundingDoubleSpent Outcome = 9
	// OutcomeFundingUnconfirmed: a buyer's channel funding never
	// confirmed within payment.funding_timeout and nothing spent its
	// inputs: perhaps a fee too low, perhaps not. It weighs half a failed
	// contract. Local only; never attested.
	OutcomeFundingUnconfirmed Outcome = 10

	outcomeMax = OutcomeFundingUnconfirmed
)

var outcomeNames = [...]string{"", "completed", "late", "failed", "abandoned", "spot_check_mismatch", "abuse", "invalid", "verified",
	"funding_double_spent", "funding_unconfirmed"}

func (o Outcome) String() string {
	if o == 0 || o > outcomeMax {
		return fmt.Sprintf("outcome(%d)", uint8(o))
	}
	return outcomeNames[o]
}

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool { return o >= OutcomeCompleted && o <= outcomeMax }

// ParseOutcome is the inverse of String.
func ParseOutcome(s string) (Outcome, error) {
	for i, n := range outcomeNames {
		if i > 0 && n == s {
			return Outcome(i), nil
		}
	}
	return 0, fmt.Errorf("unknown outcome %q", s)
}

// outcomeWeights is the evidence one contract with that outcome adds to the
// (good, bad) counts of the Beta posterior. A vanished seller or a failed
// spot check weighs more than an honest failure: they are what cheats do.
var outcomeWeights = [...][2]float64{
	OutcomeCompleted:         {1, 0},
	OutcomeLate:              {0.5, 0.5},
	OutcomeFailed:            {0, 1},
	OutcomeAbandoned:         {0, 2},
	OutcomeSpotCheckMismatch: {0, 10},
	OutcomeAbuse:             {0, 1},
	OutcomeInvalid:           {0, 4},
	OutcomeVerified:          {0, 0},
	// A proven double-spend of a funding is fraud: it blocks the buyer at
	// once (one is 10 of evidence, mean 1/12 on the 1:1 prior). A
	// funding that never confirmed may be a low fee: four of them within a
	// half-life block (min_evidence 1.5).
	OutcomeFundingDoubleSpent: {0, 10},
	OutcomeFundingUnconfirmed: {0, 0.5},
}

// local reports whether o is only ever this node's own observation: an
// attestation carrying it is refused (nothing a third party can verify
// backs it).
func (o Outcome) local() bool {
	return o == OutcomeAbuse || o == OutcomeFundingDoubleSpent || o == OutcomeFundingUnconfirmed
}

// lie reports whether o shows the seller lied about its output: a spot check
// disagreed, or the buyer found the result to be garbage. A lie ends the
// seller's streak of verified results.
func (o Outcome) lie() bool { return o == OutcomeSpotCheckMismatch || o == OutcomeInvalid }

// spotVerdict reports whether o is a spot check's verdict on a contract
// rather than how the contract itself ended; an attester may attest both
// about one contract.
func (o Outcome) spotVerdict() bool { return o == OutcomeSpotCheckMismatch || o == OutcomeVerified }

// usageTolerance is the shortfall of delivered against promised usage that
// is treated as measurement noise; usageWeight is the bad evidence per unit
// of shortfall beyond it: billing for 40% more than delivered (a 29%
// shortfall) weighs about as much as two failed contracts, because it is
// deliberate.
const (
	usageTolerance = 0.05
	usageWeight    = 10.0
)

// Observation is one fact this node saw itself about a peer.
type Observation struct {
	Peer       peer.ID
	ContractID string
	Outcome    Outcome
	// UsageRatio is delivered ÷ promised (or billed) usage; 0 means not
	// measured. Values above 1 are treated as 1.
	UsageRatio float64
	At         time.Time
	// Reason says what happened, in words (a double-spent funding's
	// conflicting transaction); kept and shown with the score (Notes),
	// at most maxReason bytes.
	Reason string
}

// maxReason caps an observation's Reason.
const maxReason = 300

// evidence converts an outcome and usage ratio into (good, bad) counts.
func evidence(o Outcome, usage float64) (good, bad float64) {
	if !o.Valid() {
		return 0, 0
	}
	w := outcomeWeights[o]
	good, bad = w[0], w[1]
	if usage > 0 && usage < 1-usageTolerance {
		good *= usage
		bad += (1 - usageTolerance - usage) * usageWeight
	}
	return good, bad
}
