package contract

// The wait for a channel's funding, on real block times.
//
// A buyer no longer waits for its funding's confirmations before it hands
// the seller the channel: it sends the open as soon as the funding is
// broadcast. The seller (whose PaymentReceiver is a FundingGate) then asks
// whether the contract may start now: on an open channel, or on an
// unconfirmed funding that passed its checks while its exposure to a
// double-spend stays within its bound (payment.zero_conf_max). If not,
// the contract waits in funded, its capacity held, until the funding has
// its confirmations or FundingWait passes (then it fails with the reason
// funding_unconfirmed, before anything was paid or ran). While it waits,
// and once when it starts, a 1.3.0 seller tells the buyer where the
// funding is (a jFunding frame): the confirmations, the next block's
// estimate, whether it started unconfirmed. The buyer's job carries it
// (JobStatus.Funding) and `submit` prints it.
//
//	seller                                  buyer
//	jHello ◀──────────────────────────────── contract
//	jOpen  ◀──────────────────────────────── channel open (funding broadcast, unconfirmed)
//	Admit: ready? ── no ──▶ jFunding (0/3, next block in ~9m) ──▶ JobStatus.Funding
//	   ▲                    … every new block, or every fundingBeat
//	   └── yes ───────────▶ jFunding (ready) ──▶ jReady ──▶ blobs, payments as before

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// jFunding (seller to buyer, 1.3.0): an encoded Funding, before jReady.
const jFunding byte = 29

// RefuseFundingUnconfirmed: the contract waited FundingWait for its
// channel's funding to confirm, in vain; nothing was paid or ran.
const RefuseFundingUnconfirmed JobReason = "funding_unconfirmed"

// ReasonFundingUnconfirmed is an attempt's reason when its seller ended
// the contract with RefuseFundingUnconfirmed.
const ReasonFundingUnconfirmed Reason = "funding_unconfirmed"

// fundingReason is ReasonFundingUnconfirmed for a job stream the seller
// ended so, else ReasonNone.
func fundingReason(err error) Reason {
	var je *JobError
	if errors.As(err, &je) && je.Reason == RefuseFundingUnconfirmed {
		return ReasonFundingUnconfirmed
	}
	return ReasonNone
}

// DefaultFundingWait is how long a contract waits for its funding's
// confirmations by default: three 10-minute blocks take longer than two
// hours about once in 2,000 tries.
const DefaultFundingWait = 2 * time.Hour

// fundingBeat is how often a waiting seller tells the buyer, new block or
// not (the stream's deadlines are extended with it).
const fundingBeat = 20 * time.Second

// fundingPoll is how often a waiting seller asks its gate.
const fundingPoll = time.Second

// FundingGate is what a PaymentReceiver may also do: say whether a
// contract may start on the channel the buyer opened, before its funding
// has the confirmations. A receiver that is no FundingGate waits for them
// in AcceptOpen.
type FundingGate interface {
	// Admit is asked after AcceptOpen, and again while the answer is not
	// ready: whether contractID, which may pay up to amount sats on the
	// channel open names (empty: a channel the buyer holds open), starts
	// now. An admitted contract stays admitted; an error means the
	// channel will not carry it (gone, failed).
	Admit(ctx context.Context, buyer peer.ID, contractID string, open []byte, amount int64) (Funding, error)
	// Release forgets contractID (its contract ended).
	Release(contractID string)
}

// Funding is where a contract's channel funding is, as its seller sees it.
type Funding struct {
	// Confirmations the funding has (0: in the mempool), of Needed.
	Confirmations uint32 `json:"confirmations"`
	Needed        uint32 `json:"needed"`
	// Ready: the contract may start (the channel is open, or ZeroConf).
	Ready bool `json:"ready"`
	// ZeroConf: it starts on the unconfirmed funding, within the seller's
	// exposure bound.
	ZeroConf bool `json:"zero_conf,omitempty"`
	// NextBlockSeconds is when the next block is expected (from recent
	// block intervals).
	NextBlockSeconds float64 `json:"next_block_seconds,omitempty"`
	// ExposureSat is the seller's exposure to unconfirmed fundings (with
	// this contract, when admitted), MaxSat its bound.
	ExposureSat int64 `json:"exposure_sat,omitempty"`
	MaxSat      int64 `json:"max_sat,omitempty"`
	// Until is when the seller stops waiting (the contract then fails with
	// funding_unconfirmed).
	Until time.Time `json:"until,omitzero"`
	// Why the contract waits.
	Why string `json:"why,omitempty"`
}

// String is the line `submit` prints: "funding: 1/3 confirmations, next
// block in about 7m".
func (f Funding) String() string {
	s := fmt.Sprintf("funding: %d/%d confirmations", f.Confirmations, f.Needed)
	switch {
	case f.Ready && f.ZeroConf:
		s += fmt.Sprintf(", started unconfirmed (seller's exposure %d of %d sat)", f.ExposureSat, f.MaxSat)
	case f.Ready:
		s += ", confirmed"
	case f.NextBlockSeconds >= 1:
		s += ", next block in about " + roughDuration(time.Duration(f.NextBlockSeconds*float64(time.Second)))
	case f.NextBlockSeconds > 0:
		s += ", next block any moment"
	}
	return s
}

// roughDuration prints d to the second below a minute, else to the minute.
func roughDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return (d.Round(time.Minute)).String()
}

// maxFundingSize bounds a jFunding frame; maxFundingWhy its text.
const (
	maxFundingSize = 512
	maxFundingWhy  = 300
)

// Funding frame fields.
const (
	fdConfirmations protowire.Number = 1 + iota
	fdNeeded
	fdReady
	fdZeroConf
	fdNextBlock // milliseconds
	fdExposure
	fdMax
	fdUntil // Unix milliseconds
	fdWhy
)

var fundingSchema = wire.Schema{Max: maxFundingSize, Fields: []wire.Spec{
	fdConfirmations: varintField, fdNeeded: varintField, fdReady: varintField, fdZeroConf: varintField,
	fdNextBlock: varintField, fdExposure: varintField, fdMax: varintField, fdUntil: varintField, fdWhy: bytesField,
}}

func marshalFunding(f Funding) []byte {
	var w enc
	w.Uint(fdConfirmations, uint64(f.Confirmations))
	w.Uint(fdNeeded, uint64(f.Needed))
	if f.Ready {
		w.Uint(fdReady, 1)
	}
	if f.ZeroConf {
		w.Uint(fdZeroConf, 1)
	}
	w.Uint(fdNextBlock, uint64(max(math.Round(f.NextBlockSeconds*1000), 0)))
	w.Uint(fdExposure, uint64(max(f.ExposureSat, 0)))
	w.Uint(fdMax, uint64(max(f.MaxSat, 0)))
	w.t(fdUntil, f.Until)
	w.String(fdWhy, truncate(f.Why, maxFundingWhy))
	return w.B
}

// unmarshalFunding decodes a seller's jFunding frame strictly.
func unmarshalFunding(b []byte) (Funding, error) {
	fields, err := decode("funding", &fundingSchema, b)
	if err != nil {
		return Funding{}, err
	}
	var f Funding
	for _, fd := range fields {
		var err error
		switch fd.Num {
		case fdConfirmations:
			f.Confirmations, err = fd.Uint32()
		case fdNeeded:
			f.Needed, err = fd.Uint32()
		case fdReady, fdZeroConf:
			var v uint64
			v, err = fd.Uint(1)
			if fd.Num == fdReady {
				f.Ready = v == 1
			} else {
				f.ZeroConf = v == 1
			}
		case fdNextBlock:
			var d time.Duration
			d, err = msDuration(fd)
			f.NextBlockSeconds = d.Seconds()
		case fdExposure, fdMax:
			var v uint64
			v, err = fd.Uint(1 << 53)
			if fd.Num == fdExposure {
				f.ExposureSat = int64(v)
			} else {
				f.MaxSat = int64(v)
			}
		case fdUntil:
			f.Until, err = msTime(fd)
		case fdWhy:
			f.Why, err = fd.Text(maxFundingWhy)
		}
		if err != nil {
			return Funding{}, fmt.Errorf("decode funding: %w", wireErr(err))
		}
	}
	if f.Needed == 0 || f.Confirmations > 1<<20 || f.Needed > 1<<20 {
		return Funding{}, fmt.Errorf("decode funding: %w: %d of %d confirmations", ErrMalformed, f.Confirmations, f.Needed)
	}
	return f, nil
}

// hasFunding reports whether a job stream of proto carries jFunding frames.
func hasFunding(proto protocol.ID) bool { return proto == JobProtocol }

// awaitFunding holds a funded contract until its seller's gate admits it
// (see the top of this file). open is the buyer's channel open message.
func (j *sellerJob) awaitFunding(ctx context.Context, open []byte) error {
	s := j.s
	g, ok := s.cfg.Payments.(FundingGate)
	if !ok || j.ct.Proposal.Request.Escrow != "" {
		// AcceptOpen waited for the confirmations, or the contract is
		// paid from an escrow (AcceptEscrow waited for its
		// confirmations).
		return nil
	}
	j.release = func() { g.Release(j.id) }
	if len(open) == 0 {
		// A buyer from before 1.4's reservations reuses a channel it
		// holds open without naming it: the gate reserves the
		// contract's worst case on the channel it will pay on, or
		// refuses it now, before the image comes, when none of the
		// buyer's open channels can carry it (its first payment names
		// the channel for certain).
		if _, err := g.Admit(ctx, j.buyer, j.id, nil, j.ct.Proposal.Total()); err != nil {
			return refuse(RefuseChannel, fmt.Errorf("channel: %w", err))
		}
		return nil
	}
	tell := hasFunding(j.c.s.Protocol())
	amount := j.ct.Proposal.Total()
	var (
		until   time.Time
		told    Funding
		toldAt  time.Time
		waiting bool
	)
	for {
		f, err := g.Admit(ctx, j.buyer, j.id, open, amount)
		if err != nil {
			return refuse(RefuseChannel, fmt.Errorf("channel funding: %w", err))
		}
		now := s.clock.Now()
		if f.Ready {
			why := fmt.Sprintf("funding confirmed (%d/%d)", f.Confirmations, f.Needed)
			if f.ZeroConf {
				why = fmt.Sprintf("started on an unconfirmed funding (%d/%d confirmations): exposure %d of %d sat",
					f.Confirmations, f.Needed, f.ExposureSat, f.MaxSat)
			}
			if waiting || f.ZeroConf {
				_, _ = s.machine.Move(RoleSeller, j.id, StateFunded, "", func(r *Record) {
					r.Why, r.Deadline = why, now.Add(s.machine.timeouts.Start)
				})
				s.log.Info("contract funding ready", "contract", j.id, "peer", j.buyer, "why", why)
			}
			if tell {
				return j.c.send(jFunding, marshalFunding(f))
			}
			return nil
		}
		if !waiting {
			waiting = true
			until = now.Add(s.cfg.FundingWait)
			_, _ = s.machine.Move(RoleSeller, j.id, StateFunded, "", func(r *Record) {
				r.Why = truncate("waiting for the funding's confirmations: "+f.Why, 200)
				// The state's own timeout, after the wait's.
				r.Deadline = until.Add(s.machine.timeouts.Start)
			})
			s.log.Info("contract waits for its funding's confirmations", "contract", j.id, "peer", j.buyer,
				"confs", f.Confirmations, "needed", f.Needed, "until", until.Format(time.RFC3339), "why", f.Why)
		}
		f.Until = until
		if !now.Before(until) {
			err := fmt.Errorf("the channel's funding has %d of %d confirmations after %s", f.Confirmations, f.Needed, s.cfg.FundingWait)
			// Nothing was paid or ran: the reservation goes, the reason
			// first in the record.
			_, _ = s.machine.Move(RoleSeller, j.id, StateFailed, string(RefuseFundingUnconfirmed)+": "+err.Error(), nil)
			return refuse(RefuseFundingUnconfirmed, fmt.Errorf("contract %s: %w", j.id, err))
		}
		if tell && (f.Confirmations != told.Confirmations || told.Needed == 0 || now.Sub(toldAt) >= fundingBeat) {
			if err := j.c.send(jFunding, marshalFunding(f)); err != nil {
				return err
			}
			told, toldAt = f, now
		}
		// The buyer sends nothing while it waits: the stream lives on.
		_ = j.c.s.SetDeadline(time.Now().Add(s.machine.timeouts.Start))
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.clock.After(fundingPoll):
		}
	}
}

// awaitReady reads the seller's answer to the channel open: jReady, after
// any jFunding frames (1.3.0), which the job's status carries. The buyer
// waits at most FundingWait plus the start timeout for it.
func (r *buyerRun) awaitReady() ([]byte, error) {
	b := r.b
	start := b.cfg.Timeouts.withDefaults().Start
	limit := b.clock.Now().Add(b.cfg.FundingWait + start)
	tell := hasFunding(r.st.Protocol())
	if r.j.Funding != nil {
		// An earlier attempt's, with another seller.
		b.update(r.j, func(j *JobStatus) { j.Funding = nil })
	}
	for {
		t, data, err := r.c.recv(maxCtlFrame)
		switch {
		case err != nil:
			return nil, sellerGone(fmt.Errorf("seller not ready: seller %s: stream broke: %w", r.seller, err))
		case t == frameError:
			je := UnmarshalJobError(data)
			return nil, withFault(je.Reason.Fault(), fmt.Errorf("seller not ready: %w", je))
		case t == jReady:
			return data, nil
		case t != jFunding || !tell:
			return nil, sellerFault(fmt.Errorf("seller not ready: %w: frame %d, want %d", ErrMalformed, t, jReady))
		}
		f, err := unmarshalFunding(data)
		if err != nil {
			return nil, sellerFault(fmt.Errorf("seller not ready: %w", err))
		}
		if !f.Ready && !b.clock.Now().Before(limit) {
			return nil, sellerFault(fmt.Errorf("seller %s kept the contract waiting for its funding beyond %s", r.seller, b.cfg.FundingWait))
		}
		prev := r.j.Funding
		b.update(r.j, func(j *JobStatus) { j.Funding = &f })
		if prev == nil || prev.Confirmations != f.Confirmations || prev.Ready != f.Ready {
			b.log.Info("channel funding", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "funding", f.String())
		}
		_ = r.st.SetDeadline(time.Now().Add(start))
	}
}
