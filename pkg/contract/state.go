package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// State is where a contract is. The numbers are stored: they are explicit
// and never renumbered; a new state is appended with the next number.
//
//	proposed ──▶ accepted ──▶ funded ──▶ running ──▶ completed ──▶ settled
//	   │            │           │   │       │            │            ▲
//	   │            │           │   │       │            └▶ disputed ─┤
//	   │            │           │   │       ▼                 │  ▲    │
//	   │            │           │   └───▶ failed ─────────────┼──┘────┘
//	   │            ├──────────────────▶  │ (no payment made) │
//	   │            │           │         ▼                   ▼
//	   │            │           └──────▶ refunded ◀───────────┘
//	   ├▶ rejected  │
//	   └▶ expired ◀─┘
//
// Timeouts (Timeouts): proposed → expired at the proposal's expiry;
// accepted → expired at the funding deadline (the reservation is released);
// funded → failed after Start (after the seller's FundingWait plus Start
// while it waits for the funding's confirmations, funding.go); running → failed after the contract's
// duration plus RunGrace; completed → settled after Settle; failed →
// settled (something was paid) or refunded (nothing was) after Settle;
// disputed → settled after Dispute. rejected, expired, settled and refunded
// are final.
type State uint8

// States.
const (
	StateProposed  State = 1
	StateAccepted  State = 2
	StateFunded    State = 3
	StateRunning   State = 4
	StateCompleted State = 5
	StateSettled   State = 6
	StateRejected  State = 7
	StateExpired   State = 8
	StateFailed    State = 9
	StateRefunded  State = 10
	StateDisputed  State = 11
)

var stateNames = map[State]string{
	StateProposed: "proposed", StateAccepted: "accepted", StateFunded: "funded",
	StateRunning: "running", StateCompleted: "completed", StateSettled: "settled",
	StateRejected: "rejected", StateExpired: "expired", StateFailed: "failed",
	StateRefunded: "refunded", StateDisputed: "disputed",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseState reads a state's name.
func ParseState(name string) (State, error) {
	for k, v := range stateNames {
		if v == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown contract state %q", name)
}

// transitions is the map drawn above.
var transitions = map[State][]State{
	StateProposed:  {StateAccepted, StateRejected, StateExpired},
	StateAccepted:  {StateFunded, StateExpired, StateFailed},
	StateFunded:    {StateRunning, StateFailed, StateRefunded},
	StateRunning:   {StateCompleted, StateFailed},
	StateCompleted: {StateSettled, StateDisputed},
	StateFailed:    {StateSettled, StateRefunded, StateDisputed},
	StateDisputed:  {StateSettled, StateRefunded},
}

// Final reports whether nothing more happens to a contract in s.
func (s State) Final() bool { _, ok := transitions[s]; return !ok }

// Holds reports whether a seller's contract in s holds capacity.
func (s State) Holds() bool {
	return s == StateAccepted || s == StateFunded || s == StateRunning
}

// CanMove reports whether from → to is in the map.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// ErrBadTransition is returned for a move not in the map.
var ErrBadTransition = errors.New("transition not allowed")

// Role is this node's side of a contract.
type Role uint8

// Roles; stored, never renumbered.
const (
	RoleSeller Role = 1
	RoleBuyer  Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleSeller:
		return "seller"
	case RoleBuyer:
		return "buyer"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

func (r Role) prefix() string {
	if r == RoleSeller {
		return "s/"
	}
	return "b/"
}

// Step is one transition in a contract's history.
type Step struct {
	From State     `json:"from"`
	To   State     `json:"to"`
	At   time.Time `json:"at"`
	Why  string    `json:"why,omitempty"`
}

// Record is a contract as this node keeps it: the signed contract, where it
// is, until when, and the money. It is what `blackbox contracts` and
// `blackbox job` show.
type Record struct {
	ID    string  `json:"id"`
	Role  Role    `json:"role"`
	Peer  peer.ID `json:"peer,omitempty"` // the other side
	State State   `json:"state"`
	// Deadline is when the current state times out (zero: never).
	Deadline time.Time `json:"deadline,omitzero"`
	// Contract is Contract.Marshal() once accepted.
	Contract []byte    `json:"contract,omitempty"`
	Proposal *Proposal `json:"proposal,omitempty"`
	// Job is the buyer's job this contract is an attempt of.
	Job string `json:"job,omitempty"`
	// Paid is the cumulative amount in sats: for the seller what it holds
	// acknowledged updates for, for the buyer what it has signed.
	Paid int64 `json:"paid_sat"`
	// Intervals is how many billing intervals were paid for.
	Intervals uint64 `json:"intervals"`
	// Started and Ended bound the run.
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	// Receipt is the seller's signed receipt envelope.
	Receipt []byte `json:"receipt,omitempty"`
	// EgressPrice is, for the seller, its offer's egress price (msat per
	// GiB) when it accepted: what the bytes it sends are billed at.
	EgressPrice uint64 `json:"egress_msat_per_gib,omitempty"`
	// EgressBytes and Egress are the bytes moved both ways (the seller's
	// outputs plus the buyer's image and inputs) and what they were
	// billed, in sats (job protocol 1.3.0, egress.go).
	EgressBytes uint64 `json:"egress_bytes,omitempty"`
	Egress      int64  `json:"egress_sat,omitempty"`
	// Why is the reason of the last move (a rejection reason, a failure).
	Why     string    `json:"why,omitempty"`
	History []Step    `json:"history"`
	Updated time.Time `json:"updated"`
}

func (r *Record) key() string { return r.Role.prefix() + r.ID }

// Timeouts are how long each state may last. Zero fields take the defaults.
type Timeouts struct {
	// Start bounds funded → running: the image transfer and the first
	// payment. Default 5m.
	Start time.Duration
	// RunGrace is added to the contract's duration before a running
	// contract is declared failed. Default 2m.
	RunGrace time.Duration
	// Settle bounds completed and failed: time to deliver results and the
	// last payment. Default 10m.
	Settle time.Duration
	// Dispute bounds disputed. Default 24h.
	Dispute time.Duration
}

func (t Timeouts) withDefaults() Timeouts {
	if t.Start <= 0 {
		t.Start = 5 * time.Minute
	}
	if t.RunGrace <= 0 {
		t.RunGrace = 2 * time.Minute
	}
	if t.Settle <= 0 {
		t.Settle = 10 * time.Minute
	}
	if t.Dispute <= 0 {
		t.Dispute = 24 * time.Hour
	}
	return t
}

// deadline is when a record entering state s at now times out.
func (t Timeouts) deadline(r *Record, s State, now time.Time) time.Time {
	switch s {
	case StateProposed:
		if r.Proposal != nil {
			return r.Proposal.Expiry
		}
		return now.Add(MaxRecordTTL)
	case StateAccepted:
		if c, err := OpenContract(r.Contract); err == nil {
			return c.Acceptance.FundBy
		}
		return now.Add(t.Start)
	case StateFunded:
		return now.Add(t.Start)
	case StateRunning:
		d := time.Duration(0)
		if r.Proposal != nil {
			d = r.Proposal.Request.Duration
		}
		return now.Add(d + t.RunGrace)
	case StateCompleted, StateFailed:
		return now.Add(t.Settle)
	case StateDisputed:
		return now.Add(t.Dispute)
	}
	return time.Time{}
}

// timeoutTarget is where a record goes when its state times out.
func timeoutTarget(r *Record) State {
	switch r.State {
	case StateProposed, StateAccepted:
		return StateExpired
	case StateFunded, StateRunning:
		return StateFailed
	case StateCompleted, StateDisputed:
		return StateSettled
	case StateFailed:
		if r.Paid > 0 {
			return StateSettled
		}
		return StateRefunded
	}
	return r.State
}

// Machine is the persisted contract state machine. Every move is checked
// against the map, written to the store in one transaction with its side
// effects (a seller's reservation is extended or released in the same
// transaction), and only then reported. Moving a record to the state it is
// already in succeeds and changes nothing, so every step can be re-run
// after a crash.
type Machine struct {
	store    Store
	timeouts Timeouts
	now      func() time.Time
	log      *slog.Logger
	// OnMove, if set, is called after every persisted move (outside any
	// transaction). Engines use it to stop jobs whose contract timed out.
	OnMove func(r *Record, from State)
}

// NewMachine returns a state machine over store.
func NewMachine(store Store, t Timeouts, now func() time.Time, log *slog.Logger) *Machine {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Machine{store: store, timeouts: t.withDefaults(), now: now, log: log}
}

// Create persists a new record in its initial state (proposed or
// accepted). Creating a record that exists returns ErrReplayed.
func (m *Machine) Create(r *Record) error {
	return m.store.Update(func(kv KV) error { return m.create(kv, r) })
}

func (m *Machine) create(kv KV, r *Record) error {
	if kv.Get(bucketContracts, r.key()) != nil {
		return fmt.Errorf("create contract %s: %w", r.ID, ErrReplayed)
	}
	now := m.now()
	r.Updated = now
	r.Deadline = m.timeouts.deadline(r, r.State, now)
	r.History = append(r.History, Step{To: r.State, At: now, Why: r.Why})
	if err := indexLive(kv, r); err != nil {
		return err
	}
	return putJSON(kv, bucketContracts, r.key(), r)
}

// Get loads a record.
func (m *Machine) Get(role Role, id string) (*Record, error) {
	var r *Record
	err := m.store.View(func(kv KV) error {
		var err error
		r, err = getRecord(kv, role, id)
		return err
	})
	return r, err
}

func getRecord(kv KV, role Role, id string) (*Record, error) {
	b := kv.Get(bucketContracts, role.prefix()+id)
	if b == nil {
		return nil, fmt.Errorf("contract %s: %w", id, ErrNotFound)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("contract %s: decode: %w", id, err)
	}
	return &r, nil
}

// decodeRecord decodes the record stored under key k.
func decodeRecord(k string, v []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("contract %s: decode: %w", k, err)
	}
	return &r, nil
}

// List returns every record of role (0: both), in key order.
func (m *Machine) List(role Role) ([]*Record, error) {
	prefix := ""
	if role != 0 {
		prefix = role.prefix()
	}
	var out []*Record
	err := m.store.View(func(kv KV) error {
		return kv.ForEach(bucketContracts, prefix, func(k string, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("contract %s: decode: %w", k, err)
			}
			out = append(out, &r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list contracts: %w", err)
	}
	return out, nil
}

// Move takes record (role, id) to state to, applying mutate (may be nil)
// to the record first, all in one transaction. Moving to the current state
// is a no-op that still applies mutate (so counters such as Paid stay
// idempotent when the caller sets them absolutely).
func (m *Machine) Move(role Role, id string, to State, why string, mutate func(*Record)) (*Record, error) {
	var (
		out  *Record
		from State
	)
	err := m.store.Update(func(kv KV) error {
		r, err := getRecord(kv, role, id)
		if err != nil {
			return err
		}
		from = r.State
		out, err = m.move(kv, r, to, why, mutate)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("move contract %s to %s: %w", id, to, err)
	}
	if from != to {
		lvl := slog.LevelInfo
		if to == StateRejected {
			// The refusal itself is logged by whoever saw it, once per
			// reason (changeLog); a busy seller's refusals come every 2 s.
			lvl = slog.LevelDebug
		}
		m.log.Log(context.Background(), lvl, "contract moved", "contract", id, "role", role, "from", from, "to", to, "why", why)
		if m.OnMove != nil {
			m.OnMove(out, from)
		}
	}
	return out, nil
}

func (m *Machine) move(kv KV, r *Record, to State, why string, mutate func(*Record)) (*Record, error) {
	now := m.now()
	if mutate != nil {
		mutate(r)
	}
	if r.State != to {
		if !CanMove(r.State, to) {
			return nil, fmt.Errorf("%w: %s → %s", ErrBadTransition, r.State, to)
		}
		r.History = append(r.History, Step{From: r.State, To: to, At: now, Why: why})
		r.State = to
		r.Why = why
		r.Deadline = m.timeouts.deadline(r, to, now)
	}
	r.Updated = now
	if r.Role == RoleSeller {
		if err := m.holdFor(kv, r); err != nil {
			return nil, err
		}
	}
	if err := indexLive(kv, r); err != nil {
		return nil, err
	}
	if err := putJSON(kv, bucketContracts, r.key(), r); err != nil {
		return nil, err
	}
	return r, nil
}

// holdFor keeps the seller's reservation in step with the state: extended
// to the state's deadline while the contract holds capacity, gone after.
func (m *Machine) holdFor(kv KV, r *Record) error {
	if !r.State.Holds() {
		return kv.Delete(bucketReservations, r.ID)
	}
	b := kv.Get(bucketReservations, r.ID)
	if b == nil {
		return nil
	}
	var res Reservation
	if err := json.Unmarshal(b, &res); err != nil {
		return err
	}
	if r.Deadline.After(res.Until) {
		res.Until = r.Deadline
	}
	return putJSON(kv, bucketReservations, r.ID, res)
}

// Advance is the lnd-style loop: for every record not final, step it while
// its current state has timed out at now, persisting after each step, until
// no record changes. It returns the records it moved. A failure leaves the
// steps already persisted in place; calling Advance again continues. It
// reads only the records the live index (live_index.go) says are due.
func (m *Machine) Advance() ([]*Record, error) {
	due, err := m.dueKeys(m.now())
	if err != nil {
		return nil, fmt.Errorf("advance: %w", err)
	}
	var moved []*Record
	for _, k := range due {
		role, id, err := splitKey(k)
		if err != nil {
			return moved, err
		}
		r, err := m.Get(role, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return moved, err
		}
		for !r.State.Final() && !r.Deadline.IsZero() && !m.now().Before(r.Deadline) {
			to := timeoutTarget(r)
			nr, err := m.Move(r.Role, r.ID, to, "timeout in "+r.State.String(), nil)
			if err != nil {
				return moved, err
			}
			r = nr
			moved = append(moved, nr)
		}
	}
	// Looked at first in a read: a write transaction commits (and syncs
	// the database file) even when it changes nothing, and Advance runs
	// every few seconds on an idle node.
	now := m.now()
	var old []string
	if err := m.store.View(func(kv KV) (err error) { old, err = expiredSeen(kv, now); return err }); err != nil {
		return moved, fmt.Errorf("prune seen proposals: %w", err)
	}
	if len(old) == 0 {
		return moved, nil
	}
	if err := m.store.Update(func(kv KV) error { return pruneSeen(kv, now) }); err != nil {
		return moved, fmt.Errorf("prune seen proposals: %w", err)
	}
	return moved, nil
}

// Recover is run once at start, before any stream is served: a seller's
// running contract lost its job with the process (the sandbox reconciles
// and kills what a crash left), so it fails with the intervals it was paid
// for; a buyer's funded or running contract lost its stream, so it fails
// too (the buyer retries elsewhere). Then Advance applies timeouts.
func (m *Machine) Recover() ([]*Record, error) {
	recs, err := m.List(0)
	if err != nil {
		return nil, err
	}
	var moved []*Record
	for _, r := range recs {
		lost := r.State == StateRunning || (r.Role == RoleBuyer && r.State == StateFunded)
		if !lost {
			continue
		}
		nr, err := m.Move(r.Role, r.ID, StateFailed, "node restarted", nil)
		if err != nil {
			return moved, err
		}
		moved = append(moved, nr)
	}
	more, err := m.Advance()
	return append(moved, more...), err
}

// Held is the capacity a seller's current reservations hold at now.
func (m *Machine) Held() (held offer.Resources, err error) {
	err = m.store.View(func(kv KV) error {
		held, _, err = reservationsAt(kv, m.now())
		return err
	})
	return held, err
}
