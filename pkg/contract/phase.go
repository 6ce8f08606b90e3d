package contract

import "time"

// Phases of a job, as the engines time them for the node's metrics
// (SellerConfig.OnPhase, BuyerConfig.OnPhase).
//
// The seller's: fund (the contract arrived → the buyer's channel is
// accepted), transfer (the image and inputs received, checked and
// imported), pay (waiting for the first interval's payment), start (the
// sandbox's set-up and clean-up around the job: the runner's time minus
// the job's own), run (the job's wall time), results (the receipt signed,
// recorded and sent).
//
// The buyer's are the job's JobStatus.Phase values: discover, negotiate,
// fund, transfer (until the first interval is paid), run (until the
// receipt arrives) and results (the receipt and outputs checked, the
// contract settled); each is reported when the job leaves it.
const (
	PhaseDiscover  = "discover"
	PhaseNegotiate = "negotiate"
	PhaseFund      = "fund"
	PhaseTransfer  = "transfer"
	PhasePay       = "pay"
	PhaseStart     = "start"
	PhaseRun       = "run"
	PhaseResults   = "results"
	// PhaseResume is a service contract's (buyer) while its job stream
	// broke and is being resumed (buyerresume.go).
	PhaseResume = "resume"
)

// PhaseFunc is told that a job of role spent d in phase. It is called from
// the engines' goroutines and must be quick.
type PhaseFunc func(role Role, phase string, d time.Duration)

// phase reports the time since start in phase to the seller's OnPhase, if
// set, and returns now: the next phase's start.
func (s *Seller) phase(phase string, start time.Time) time.Time {
	now := s.clock.Now()
	if s.cfg.OnPhase != nil {
		s.cfg.OnPhase(RoleSeller, phase, now.Sub(start))
	}
	return now
}

// ran reports how long the runner took for a job: its own wall time (run)
// and the sandbox's work around it (start).
func (s *Seller) ran(took time.Duration, res *RunResult) {
	if s.cfg.OnPhase == nil || res == nil {
		return
	}
	s.cfg.OnPhase(RoleSeller, PhaseStart, max(took-res.Usage.Wall, 0))
	s.cfg.OnPhase(RoleSeller, PhaseRun, res.Usage.Wall)
}

// phaseChange reports the phase a buyer's job just left (from, entered at
// j.phaseAt) and starts timing the one it entered. The caller holds b.mu.
func (b *Buyer) phaseChange(j *JobStatus, from string) {
	now := b.clock.Now()
	if from != "" && !j.phaseAt.IsZero() && b.cfg.OnPhase != nil {
		b.cfg.OnPhase(RoleBuyer, from, now.Sub(j.phaseAt))
	}
	j.phaseAt = now
}
