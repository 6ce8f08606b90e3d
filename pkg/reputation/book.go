package reputation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Reason names why a record was ignored. Counted in Book.Rejections.
type Reason string

// Rejection reasons.
const (
	ReasonOversized     Reason = "oversized"
	ReasonMalformed     Reason = "malformed"
	ReasonForged        Reason = "forged"
	ReasonSelfReference Reason = "self_reference"
	ReasonReplayed      Reason = "replayed"
	ReasonExpired       Reason = "expired"
	ReasonUnpaid        Reason = "unpaid"
	ReasonUnverifiable  Reason = "unverifiable"
	ReasonRateLimited   Reason = "rate_limited"
	ReasonStale         Reason = "stale"
)

// ErrRejected is wrapped by AddRecord's errors; errors.As gives *Rejection.
var ErrRejected = errors.New("record rejected")

// Rejection is the error AddRecord returns for an ignored record.
type Rejection struct {
	Reason Reason
	Err    error
}

func (r *Rejection) Error() string { return fmt.Sprintf("record rejected (%s): %v", r.Reason, r.Err) }

// Unwrap lets errors.Is(err, ErrRejected) work.
func (r *Rejection) Unwrap() []error { return []error{ErrRejected, r.Err} }

// Options configure a Book.
type Options struct {
	Config Config
	// Self is this node's peer ID (optional): attestations about it and trust
	// statements pointing back at it are not used to score others.
	Self peer.ID
	// Store persists observations, accepted records and explicit edges; nil
	// means an in-memory store.
	Store Store
	// Evidence verifies that attested contracts were signed and paid; nil
	// means no attestation counts.
	Evidence ContractEvidence
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives debug lines about ignored records (default: discard).
	Log *slog.Logger
}

// tally is decayed evidence from one source about one peer.
type tally struct {
	counts [outcomeMax + 1]float64
	good   float64
	bad    float64
	at     time.Time
	streak streak
}

func (t *tally) add(o Outcome, usage, w float64, at time.Time, halfLife time.Duration) {
	t.streak.add(o, at)
	if o == OutcomeVerified {
		// No evidence: counted, without moving the tally's time.
		t.counts[o] += w
		return
	}
	if t.at.IsZero() {
		t.at = at
	}
	if at.After(t.at) {
		f := decay(at.Sub(t.at), halfLife)
		for i := range t.counts {
			t.counts[i] *= f
		}
		t.good *= f
		t.bad *= f
		t.at = at
	} else {
		w *= decay(t.at.Sub(at), halfLife)
	}
	g, b := evidence(o, usage)
	t.counts[o] += w
	t.good += g * w
	t.bad += b * w
}

// at returns the tally's (good, bad, counts scale) decayed to now.
func (t *tally) factor(now time.Time, halfLife time.Duration) float64 {
	if !now.After(t.at) {
		return 1
	}
	return decay(now.Sub(t.at), halfLife)
}

func decay(d, halfLife time.Duration) float64 {
	return math.Exp2(-float64(d) / float64(halfLife))
}

// Book is one node's reputation state: own observations, accepted
// attestations, the trust graph, and the scores derived from them. It is safe
// for concurrent use and never blocks on the network (VerifyContract is the
// one call out, bounded by the caller's context).
type Book struct {
	mu   sync.Mutex
	cfg  Config
	self peer.ID
	st   Store
	ev   ContractEvidence
	now  func() time.Time
	log  *slog.Logger

	g         *graph
	trust     map[peer.ID]float64
	trustVer  uint64
	own       map[peer.ID]*tally
	att       map[peer.ID]map[peer.ID]*tally // subject → attester → tally
	seen      map[string]struct{}            // attester|contract: replay guard
	rejected  map[Reason]uint64
	accepted  uint64
	trustSeen map[string]time.Time  // truster|subject → newest statement
	firstSeen map[peer.ID]time.Time // when Rank first saw a candidate
	forgot    map[peer.ID]time.Time // Forget: evidence up to then is dropped
	notes     map[peer.ID][]Note    // own observations with a reason, newest last
}

// Note is one of this node's own observations that came with a reason (a
// double-spent funding…), as Score shows it.
type Note struct {
	Outcome    string    `json:"outcome"`
	ContractID string    `json:"contract_id"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// maxNotes is how many notes a Score shows per peer (the newest).
const maxNotes = 5

// NewBook validates the config, loads the store and returns the Book.
func NewBook(o Options) (*Book, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	b := &Book{
		cfg: o.Config, self: o.Self, st: o.Store, ev: o.Evidence, now: o.Now, log: o.Log,
		g: newGraph(), own: map[peer.ID]*tally{}, att: map[peer.ID]map[peer.ID]*tally{},
		seen: map[string]struct{}{}, rejected: map[Reason]uint64{}, trustSeen: map[string]time.Time{}, firstSeen: map[peer.ID]time.Time{},
		forgot: map[peer.ID]time.Time{}, notes: map[peer.ID][]Note{},
		trustVer: math.MaxUint64,
	}
	if b.st == nil {
		b.st = NewMemStore()
	}
	if b.ev == nil {
		b.ev = noEvidence{}
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	snap, err := b.st.Load()
	if err != nil {
		return nil, fmt.Errorf("load reputation store: %w", err)
	}
	for _, e := range snap.Edges {
		e.From = Self
		b.g.set(e)
	}
	for _, ob := range snap.Observations {
		b.addObservation(ob)
	}
	for _, raw := range snap.Records {
		// Accepted once, so the contract evidence was checked; signatures
		// are checked again because the file is not trusted more than that.
		rec, err := DecodeRecord(raw, math.MaxInt)
		if err != nil {
			b.log.Debug("reputation: dropping stored record", "err", err)
			continue
		}
		switch r := rec.(type) {
		case *Attestation:
			b.seen[replayKey(r)] = struct{}{}
			b.addAttestation(r)
		case *TrustStatement:
			b.addTrust(r)
		}
	}
	return b, nil
}

// Config returns the Book's configuration.
func (b *Book) Config() Config { return b.cfg }

// Observe records one of this node's own observations.
func (b *Book) Observe(o Observation) error {
	if !o.Outcome.Valid() {
		return fmt.Errorf("observe %s: invalid outcome %d", o.Peer, o.Outcome)
	}
	if o.At.IsZero() {
		o.At = b.now()
	}
	if len(o.Reason) > maxReason {
		o.Reason = o.Reason[:maxReason]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.st.AppendObservation(o); err != nil {
		return fmt.Errorf("observe %s contract %s: %w", o.Peer, o.ContractID, err)
	}
	b.addObservation(o)
	return nil
}

// Penalize records protocol abuse by p (for example an attestation flood).
func (b *Book) Penalize(p peer.ID, why string) {
	b.log.Debug("reputation: penalizing peer", "peer", p, "why", why)
	if err := b.Observe(Observation{Peer: p, ContractID: "abuse:" + why, Outcome: OutcomeAbuse}); err != nil {
		b.log.Warn("reputation: store penalty", "peer", p, "err", err)
	}
}

// Forget drops this node's own observations of p and the attestations
// about p it holds, and with them any block: p starts again as a peer this
// node knows nothing about. Later contracts count again, and attestations
// issued after now. The forgetting is kept as a marker among the
// observations, so it outlives a restart.
func (b *Book) Forget(p peer.ID) error {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	m := Observation{Peer: p, ContractID: "forget", Outcome: outcomeForget, At: now}
	if err := b.st.AppendObservation(m); err != nil {
		return fmt.Errorf("forget %s: %w", p, err)
	}
	b.addObservation(m)
	b.log.Info("reputation: forgot what this node knew of a peer", "peer", p)
	return nil
}

// outcomeForget marks a Forget among the stored observations; it is never
// a valid outcome (Observe refuses it, attestations never carry it).
const outcomeForget Outcome = 0

func (b *Book) addObservation(o Observation) {
	if o.Outcome == outcomeForget {
		delete(b.own, o.Peer)
		delete(b.att, o.Peer)
		delete(b.notes, o.Peer)
		if o.At.After(b.forgot[o.Peer]) {
			b.forgot[o.Peer] = o.At
		}
		return
	}
	if f, ok := b.forgot[o.Peer]; ok && !o.At.After(f) {
		return
	}
	if !o.Outcome.Valid() {
		// A later version's outcome, stored before a downgrade.
		return
	}
	t := b.own[o.Peer]
	if t == nil {
		t = &tally{}
		b.own[o.Peer] = t
	}
	t.add(o.Outcome, o.UsageRatio, 1, o.At, b.cfg.HalfLife)
	if o.Reason != "" && o.Outcome.Valid() {
		n := append(b.notes[o.Peer], Note{Outcome: o.Outcome.String(), ContractID: o.ContractID, Reason: o.Reason, At: o.At})
		b.notes[o.Peer] = n[max(0, len(n)-maxNotes):]
	}
}

// replayKey allows one attestation of how a contract ended and one of its
// spot check's verdict per attester and contract.
func replayKey(a *Attestation) string {
	k := string(a.Attester) + "|" + a.ContractID
	if a.Outcome.spotVerdict() {
		k += "|spot"
	}
	return k
}

func (b *Book) addAttestation(a *Attestation) {
	if f, ok := b.forgot[a.Subject]; ok && !a.IssuedAt.After(f) {
		return
	}
	m := b.att[a.Subject]
	if m == nil {
		m = map[peer.ID]*tally{}
		b.att[a.Subject] = m
	}
	t := m[a.Attester]
	if t == nil {
		t = &tally{}
		m[a.Attester] = t
	}
	t.add(a.Outcome, float64(a.UsagePermille)/1000, 1, a.IssuedAt, b.cfg.HalfLife)
}

func (b *Book) addTrust(t *TrustStatement) bool {
	k := string(t.Truster) + "|" + string(t.Subject)
	if prev, ok := b.trustSeen[k]; ok && !t.IssuedAt.After(prev) {
		return false
	}
	if !b.g.set(Edge{From: t.Truster, To: t.Subject, Weight: float64(t.WeightPM) / 1000, Updated: t.IssuedAt}) {
		return false
	}
	b.trustSeen[k] = t.IssuedAt
	return true
}

// count records a rejection decided outside AddRecord (the exchange).
func (b *Book) count(r Reason, from peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected[r]++
	b.log.Debug("reputation: ignoring record", "from", from, "reason", r)
}

func (b *Book) reject(r Reason, from peer.ID, err error) error {
	b.rejected[r]++
	b.log.Debug("reputation: ignoring record", "from", from, "reason", r, "err", err)
	return &Rejection{Reason: r, Err: err}
}

// AddRecord verifies a signed attestation or trust statement received from
// peer from (Self for local input) and, if it passes, keeps it. Ignored
// records return a *Rejection and are counted by reason.
func (b *Book) AddRecord(ctx context.Context, from peer.ID, data []byte) error {
	rec, err := DecodeRecord(data, b.cfg.MaxAttestationBytes)
	if err != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch {
		case errors.Is(err, ErrOversized):
			return b.reject(ReasonOversized, from, err)
		case errors.Is(err, ErrForged):
			return b.reject(ReasonForged, from, err)
		default:
			return b.reject(ReasonMalformed, from, err)
		}
	}
	now := b.now()
	switch r := rec.(type) {
	case *TrustStatement:
		b.mu.Lock()
		defer b.mu.Unlock()
		if r.Truster == r.Subject {
			return b.reject(ReasonSelfReference, from, errors.New("peer trusts itself"))
		}
		if r.IssuedAt.After(now.Add(time.Hour)) {
			return b.reject(ReasonExpired, from, fmt.Errorf("issued in the future (%s)", r.IssuedAt))
		}
		if !b.addTrust(r) {
			return b.reject(ReasonStale, from, errors.New("older than the known statement or too many edges"))
		}
		if err := b.st.PutRecord("trust|"+string(r.Truster)+"|"+string(r.Subject), data); err != nil {
			return fmt.Errorf("store trust statement: %w", err)
		}
		b.accepted++
		return nil
	case *Attestation:
		return b.addAttestationRecord(ctx, from, r, data, now)
	}
	return nil
}

func (b *Book) addAttestationRecord(ctx context.Context, from peer.ID, a *Attestation, data []byte, now time.Time) error {
	b.mu.Lock()
	switch {
	case a.Attester == a.Subject:
		defer b.mu.Unlock()
		return b.reject(ReasonSelfReference, from, fmt.Errorf("%s attests itself", a.Attester))
	case now.After(a.Expires) || a.IssuedAt.After(now.Add(time.Hour)):
		defer b.mu.Unlock()
		return b.reject(ReasonExpired, from, fmt.Errorf("valid %s..%s", a.IssuedAt, a.Expires))
	}
	if _, ok := b.seen[replayKey(a)]; ok {
		defer b.mu.Unlock()
		return b.reject(ReasonReplayed, from, fmt.Errorf("contract %s already attested by %s", a.ContractID, a.Attester))
	}
	b.mu.Unlock()

	pc, err := b.ev.VerifyContract(ctx, a.ContractID, a.Evidence)

	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case errors.Is(err, ErrUnpaid):
		return b.reject(ReasonUnpaid, from, err)
	case err != nil:
		return b.reject(ReasonUnverifiable, from, err)
	case !(pc.Buyer == a.Attester && pc.Seller == a.Subject) && !(pc.Seller == a.Attester && pc.Buyer == a.Subject):
		return b.reject(ReasonUnverifiable, from, fmt.Errorf("contract %s is between %s and %s", a.ContractID, pc.Buyer, pc.Seller))
	case pc.PaidSats < b.cfg.MinPaidSats:
		return b.reject(ReasonUnpaid, from, fmt.Errorf("paid %d sats < %d", pc.PaidSats, b.cfg.MinPaidSats))
	}
	if _, ok := b.seen[replayKey(a)]; ok { // raced with a concurrent copy
		return b.reject(ReasonReplayed, from, fmt.Errorf("contract %s already attested", a.ContractID))
	}
	if err := b.st.PutRecord("att|"+replayKey(a), data); err != nil {
		return fmt.Errorf("store attestation %s: %w", a.ContractID, err)
	}
	b.seen[replayKey(a)] = struct{}{}
	b.addAttestation(a)
	b.accepted++
	return nil
}

// Rejections returns how many records were ignored, by reason.
func (b *Book) Rejections() map[Reason]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[Reason]uint64, len(b.rejected))
	for k, v := range b.rejected {
		out[k] = v
	}
	return out
}

// Accepted is the number of records accepted since NewBook.
func (b *Book) Accepted() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

// SetTrust adds or changes this node's explicit trust in p (weight in
// (0, 1]); weight 0 removes it.
func (b *Book) SetTrust(p peer.ID, weight float64) error {
	if p == Self || p == b.self {
		return errors.New("trust: cannot trust oneself")
	}
	if weight < 0 || weight > 1 || weight != weight {
		return fmt.Errorf("trust %s: weight %v not in [0, 1]", p, weight)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := Edge{From: Self, To: p, Weight: weight, Updated: b.now()}
	var err error
	if weight == 0 {
		err = b.st.DeleteEdge(p)
	} else {
		err = b.st.PutEdge(e)
	}
	if err != nil {
		return fmt.Errorf("trust %s: %w", p, err)
	}
	b.g.set(e)
	return nil
}

// Edges lists this node's explicit trust edges.
func (b *Book) Edges() []Edge {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.g.edges(Self)
}

// Trust returns this node's propagated trust in p (0 when unreachable).
func (b *Book) Trust(p peer.ID) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.trustLocked()[p]
}

func (b *Book) trustLocked() map[peer.ID]float64 {
	if b.trustVer != b.g.version {
		b.trust = b.g.propagate(b.self, b.cfg.MaxHops)
		b.trustVer = b.g.version
	}
	return b.trust
}

// Source is one contribution to a score.
type Source struct {
	// From is the attester, or Self for this node's own observations.
	From peer.ID `json:"from"`
	// Weight is what each unit of this source's evidence counts: 1 for own
	// observations, trust × attestation_weight for attesters (before the
	// per-attester cap).
	Weight float64 `json:"weight"`
	// Outcomes are the decayed contract counts by outcome, unweighted.
	Outcomes map[string]float64 `json:"outcomes"`
	// Good and Bad are what this source added to the posterior.
	Good float64 `json:"good"`
	Bad  float64 `json:"bad"`
}

// Score is this node's current opinion of a peer.
type Score struct {
	Peer peer.ID `json:"peer"`
	// Mean is the Beta posterior mean: the expected chance that a contract
	// with this peer goes well.
	Mean float64 `json:"mean"`
	// StdDev, Low and High give the uncertainty: the posterior's standard
	// deviation and a 90% interval (normal approximation, clipped).
	StdDev float64 `json:"std_dev"`
	Low    float64 `json:"low"`
	High   float64 `json:"high"`
	// Alpha and Beta are the posterior parameters (prior included).
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta"`
	// Evidence is the weighted evidence behind the score, in contracts.
	Evidence float64 `json:"evidence"`
	// Blocked says the peer gets no work and is refused by the gater.
	Blocked bool `json:"blocked"`
	// Verified is the peer's streak of verified results (spot checks its
	// output passed since its last lie, own and trusted attesters'
	// weighted), and SpotCheckRate the share of its deterministic jobs
	// that are spot-checked because of it.
	Verified      float64  `json:"verified"`
	SpotCheckRate float64  `json:"spot_check_rate"`
	Trust         float64  `json:"trust"`
	Why           string   `json:"why"`
	Sources       []Source `json:"sources,omitempty"`
	// Notes are the newest of this node's own observations of the peer
	// that came with a reason (a double-spent funding and its conflict).
	Notes []Note `json:"notes,omitempty"`
}

// posterior sums the evidence about p. It is the hot path of selection.
func (b *Book) posterior(p peer.ID, now time.Time, explain bool) Score {
	s := Score{Peer: p}
	var good, bad float64
	if t := b.own[p]; t != nil {
		f := t.factor(now, b.cfg.HalfLife)
		good += t.good * f
		bad += t.bad * f
		if explain {
			s.Sources = append(s.Sources, source(Self, 1, t, f, t.good*f, t.bad*f))
		}
	}
	if m := b.att[p]; len(m) > 0 {
		trust := b.trustLocked()
		// In a fixed order: float sums depend on it, and the same evidence
		// must give the same score (and the simulation the same table).
		var buf [64]peer.ID
		order := buf[:0]
		for a := range m {
			order = append(order, a)
		}
		slices.Sort(order)
		for _, a := range order {
			t := m[a]
			w := trust[a] * b.cfg.AttestationWeight
			if w <= 0 || a == b.self {
				continue
			}
			f := t.factor(now, b.cfg.HalfLife)
			g, bd := t.good*f, t.bad*f
			if tot := g + bd; tot > b.cfg.MaxPerAttester {
				g, bd = g*b.cfg.MaxPerAttester/tot, bd*b.cfg.MaxPerAttester/tot
			}
			good += g * w
			bad += bd * w
			if explain {
				s.Sources = append(s.Sources, source(a, w, t, f, g*w, bd*w))
			}
		}
	}
	s.Alpha = b.cfg.PriorGood + good
	s.Beta = b.cfg.PriorBad + bad
	s.Evidence = good + bad
	n := s.Alpha + s.Beta
	s.Mean = s.Alpha / n
	s.StdDev = math.Sqrt(s.Alpha * s.Beta / (n * n * (n + 1)))
	s.Low = math.Max(0, s.Mean-1.645*s.StdDev)
	s.High = math.Min(1, s.Mean+1.645*s.StdDev)
	s.Blocked = s.Evidence >= b.cfg.MinEvidence && s.Mean < b.cfg.Threshold
	return s
}

func source(from peer.ID, w float64, t *tally, f, good, bad float64) Source {
	src := Source{From: from, Weight: w, Outcomes: map[string]float64{}, Good: good, Bad: bad}
	for o := OutcomeCompleted; o <= outcomeMax; o++ {
		if c := t.counts[o] * f; c > 0.005 {
			src.Outcomes[o.String()] = c
		}
	}
	return src
}

// Score returns this node's opinion of p with its explanation.
func (b *Book) Score(p peer.ID) Score {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.posterior(p, b.now(), true)
	s.Trust = b.trustLocked()[p]
	s.Verified = b.verifiedLocked(p)
	s.SpotCheckRate = b.cfg.SpotCheckRate(s.Verified)
	sort.Slice(s.Sources, func(i, j int) bool {
		return s.Sources[i].Good+s.Sources[i].Bad > s.Sources[j].Good+s.Sources[j].Bad
	})
	s.Why = explain(s, b.cfg)
	s.Notes = slices.Clone(b.notes[p])
	return s
}

func explain(s Score, cfg Config) string {
	verdict := "eligible for work"
	if s.Blocked {
		verdict = fmt.Sprintf("blocked: mean %.2f below threshold %.2f", s.Mean, cfg.Threshold)
	} else if s.Evidence < cfg.ExploreBelow {
		verdict = "new: little evidence, gets exploratory work"
	}
	verdict += fmt.Sprintf("; %.0f%% of its deterministic jobs spot-checked (%.1f verified in a row)", 100*s.SpotCheckRate, s.Verified)
	own, others := 0.0, 0.0
	for _, src := range s.Sources {
		if src.From == Self {
			own += src.Good + src.Bad
		} else {
			others += src.Good + src.Bad
		}
	}
	return fmt.Sprintf("%s; %.1f contracts of evidence (%.1f own, %.1f from %d trusted attesters) on a %.0f:%.0f prior",
		verdict, s.Evidence, own, others, countAttesters(s.Sources), cfg.PriorGood, cfg.PriorBad)
}

func countAttesters(ss []Source) int {
	n := 0
	for _, s := range ss {
		if s.From != Self {
			n++
		}
	}
	return n
}

// Blocked reports whether p is below the threshold (no work, no connection).
func (b *Book) Blocked(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.posterior(p, b.now(), false).Blocked
}

// Peers lists every peer the Book has evidence about, sorted.
func (b *Book) Peers() []peer.ID {
	b.mu.Lock()
	defer b.mu.Unlock()
	set := map[peer.ID]struct{}{}
	for p := range b.own {
		set[p] = struct{}{}
	}
	for p := range b.att {
		set[p] = struct{}{}
	}
	for _, e := range b.g.edges(Self) {
		set[e.To] = struct{}{}
	}
	out := make([]peer.ID, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// NewAttestation builds the attestation this node (attester) issues about
// an observation of a contract that paid paidSats; evidence is the proof
// the contract code supplies. Seal it with SealAttestation.
func (b *Book) NewAttestation(attester peer.ID, o Observation, paidSats uint64, evidence []byte) *Attestation {
	at := o.At
	if at.IsZero() {
		at = b.now()
	}
	usage := o.UsageRatio
	if usage > 1 {
		usage = 1
	}
	return &Attestation{
		Version: RecordVersion, ContractID: o.ContractID, Attester: attester, Subject: o.Peer,
		Outcome: o.Outcome, UsagePermille: uint32(math.Round(usage * 1000)), PaidSats: paidSats,
		IssuedAt: at, Expires: at.Add(b.cfg.AttestationTTL), Evidence: evidence,
	}
}
