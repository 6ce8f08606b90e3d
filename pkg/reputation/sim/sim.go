// Package sim is an in-process, deterministic market simulation that measures
// how well the reputation package isolates cheating sellers. Buyers are real
// reputation.Books with real Ed25519 keys; every contract produces a real
// signed attestation that every other buyer verifies (signature, replay,
// paid-contract evidence) before it counts, weighted by trust.
//
// The blackbox policy is the node's: the buyer ranks with Book.Rank (as
// pkg/contract's Rank does through the node), asks Book.ShouldSpotCheck after
// a deterministic job, re-runs it on the sellers Book.Rank(ForSpotCheck)
// puts first (up to two re-runs, two tries each, as the buyer engine), and
// records each contract's outcome and then the spot check's verdicts
// (ResolveSpotCheck), all with reputation.DefaultConfig, the node's default.
//
// The simulated world: sellers with prices and capacity, buyers drawing jobs
// from a shared stream, honest sellers that are sometimes late or fail, and
// cheats of four kinds — garbage (take payment, return garbage), vanish (quit
// mid-job), inflate (bill more usage than delivered) and a Sybil ring that
// returns garbage and vouches for itself through paid contracts among its
// own identities; and occasional cheats, honest but on a share of their
// contracts. Some honest sellers join late.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// Config describes one simulated market.
type Config struct {
	Seed      uint64
	Sellers   int
	Buyers    int
	Contracts int
	// CheatShare is the share of sellers that cheat; the Sybil ring counts
	// towards it, the rest is split between garbage, vanish and inflate.
	CheatShare float64
	SybilRing  int
	// LateHonest honest sellers join spread over the middle of the run.
	LateHonest int
	// Slots is how many contracts a seller runs at once.
	Slots int
	// Deterministic is the share of jobs whose output can be spot-checked.
	Deterministic float64
	// NoticeGarbage is the chance a buyer notices a garbage result itself.
	NoticeGarbage float64
	// UsageVisible is the chance a buyer can measure delivered usage.
	UsageVisible float64
	// TrustPerBuyer is how many other buyers each buyer trusts explicitly.
	TrustPerBuyer int
	// SybilVouches is how many paid fake contracts each ring member does
	// with the ring before the market opens.
	SybilVouches int
	// Occasional sellers (on top of CheatShare's) return garbage on
	// OccasionalShare of their contracts and are honest otherwise.
	Occasional      int
	OccasionalShare float64
	// MeasureFrom is the market contract from which spending is also
	// counted apart (SteadyCheckShare), once the market has settled.
	MeasureFrom int
	Reputation  reputation.Config
}

// DefaultConfig is the market: 200 sellers, 50 buyers, 5,000
// contracts, 20% cheats including a Sybil ring of 20.
func DefaultConfig() Config {
	return Config{
		Seed: 1, Sellers: 200, Buyers: 50, Contracts: 5000, CheatShare: 0.2, SybilRing: 20,
		LateHonest: 10, Slots: 2, Deterministic: 0.8, NoticeGarbage: 0.3, UsageVisible: 0.5,
		TrustPerBuyer: 5, SybilVouches: 10, OccasionalShare: 0.1, Reputation: reputation.DefaultConfig(),
	}
}

// SteadyConfig is a market run long enough to settle, for what spot checks
// cost once most sellers are proven: 40 sellers (20% cheats, a Sybil ring
// of 4, 2 honest newcomers), 10 buyers, 20,000 contracts, spending counted
// over the second half.
func SteadyConfig() Config {
	c := DefaultConfig()
	c.Sellers, c.Buyers, c.Contracts, c.SybilRing, c.LateHonest, c.TrustPerBuyer = 40, 10, 20000, 4, 2, 3
	c.MeasureFrom = c.Contracts / 2
	return c
}

// CatchConfig is a market of 30 honest sellers and 30 occasional cheats
// (garbage on 10% of their contracts), 10 buyers, 6,000 contracts: how
// soon each cheat is caught.
func CatchConfig() Config {
	c := DefaultConfig()
	c.Sellers, c.Buyers, c.Contracts, c.CheatShare, c.SybilRing, c.LateHonest, c.TrustPerBuyer = 60, 10, 6000, 0, 0, 0, 3
	c.Occasional = 30
	return c
}

// Validate checks that the market can be built.
func (c Config) Validate() error {
	cheats := int(math.Round(float64(c.Sellers) * c.CheatShare))
	switch {
	case c.Sellers < 1 || c.Buyers < 2 || c.Contracts < 1:
		return errors.New("sim: need sellers ≥ 1, buyers ≥ 2, contracts ≥ 1")
	case c.SybilRing > cheats:
		return fmt.Errorf("sim: sybil ring %d larger than the %d cheats", c.SybilRing, cheats)
	case cheats+c.Occasional+c.LateHonest > c.Sellers:
		return errors.New("sim: cheats + occasional cheats + late honest sellers exceed sellers")
	case c.OccasionalShare < 0 || c.OccasionalShare > 1:
		return errors.New("sim: occasional share must be in [0, 1]")
	case c.Slots < 1 || c.TrustPerBuyer >= c.Buyers:
		return errors.New("sim: slots ≥ 1 and trust_per_buyer < buyers")
	}
	return c.Reputation.Validate()
}

// Kind is a seller's behaviour.
type Kind int

// Seller kinds.
const (
	Honest Kind = iota
	Garbage
	Vanish
	Inflate
	Sybil
	Occasional
)

var kindNames = [...]string{"honest", "garbage", "vanish", "inflate", "sybil", "occasional"}

func (k Kind) String() string { return kindNames[k] }

// Policy is how buyers pick a seller.
type Policy int

// Policies compared by the simulation.
const (
	Random Policy = iota
	Cheapest
	Blackbox
)

var policyNames = [...]string{"random", "cheapest-first", "blackbox"}

func (p Policy) String() string { return policyNames[p] }

type seller struct {
	id    peer.ID
	key   crypto.PrivKey
	kind  Kind
	price float64 // sats per job unit
	join  int     // market contract index at which it appears
	busy  []int   // contract index at which each running job ends
	wins  int
	first int
	last  int
	// checkable counts its contracts whose output a spot check can verify
	// (deterministic jobs).
	checkable int
	// caught and caughtAll are how many checkable and how many contracts
	// the seller had when a buyer first caught it lying (a spot-check
	// mismatch or garbage it noticed); -1: never.
	caught, caughtAll int
	// survive is, for an honest seller, the chance that a seller meeting
	// the same spot-check chances on its first 50 checkable contracts, but
	// lying on OccasionalShare of them, would not have been caught.
	survive float64
}

type buyer struct {
	id   peer.ID
	key  crypto.PrivKey
	book *reputation.Book
}

// ledger stands in for the contract and payment code: it knows every
// contract both parties signed and what was paid.
type ledger map[string]reputation.PaidContract

func (l ledger) VerifyContract(_ context.Context, id string, _ []byte) (reputation.PaidContract, error) {
	pc, ok := l[id]
	switch {
	case !ok:
		return pc, reputation.ErrUnverifiable
	case pc.PaidSats == 0:
		return pc, reputation.ErrUnpaid
	}
	return pc, nil
}

// Result is what one policy achieved.
type Result struct {
	Policy    Policy
	Contracts int // market contracts
	Extra     int // spot-check contracts on top
	// PaidSats is everything buyers paid, ExtraPaid what they paid for
	// spot-check re-runs; the Steady ones count from MeasureFrom on.
	PaidSats        float64
	ExtraPaid       float64
	SteadyPaid      float64
	SteadyExtraPaid float64
	LostSats        float64
	LostByKind      map[Kind]float64
	// Isolation is, per cheat, the market contracts until its last win
	// (0: never won); -1 when it still won in the last 10% of the run.
	Isolation map[Kind][]int
	// FirstJob is, per late honest seller, the market contracts between
	// joining and its first job; -1 when it never got one.
	FirstJob []int
	// Caught is, per cheat, how many checkable contracts (deterministic
	// jobs) it had when first caught lying (-1: never), and Served how many
	// it had at the end; CaughtAll and ServedAll count all its contracts.
	Caught, Served       map[Kind][]int
	CaughtAll, ServedAll map[Kind][]int
	// CatchChance is, per honest seller with 50 checkable contracts, the
	// chance that spot checks at the rates it met would have caught a
	// seller lying on OccasionalShare of them within those 50: the
	// policy's catch probability measured in the market, with far less
	// noise than counting the few occasional cheats (a cheat looks honest
	// until caught, so it meets the same rates).
	CatchChance []float64
	SybilWins   int
	CheatWins   int
	SpotChecks  int
	// HonestBlocked counts honest sellers that more than half of the buyers
	// refuse at the end of the run (false positives).
	HonestBlocked int
	Rejected      map[reputation.Reason]uint64
	Accepted      uint64
}

// CheckShare is the share of all spending that went to spot checks.
func (r Result) CheckShare() float64 { return r.ExtraPaid / math.Max(r.PaidSats, 1) }

// SteadyCheckShare is CheckShare from MeasureFrom on.
func (r Result) SteadyCheckShare() float64 { return r.SteadyExtraPaid / math.Max(r.SteadyPaid, 1) }

// CaughtWithin counts the cheats of kind k caught lying within n of their
// checkable contracts, and those that had n of them or were caught (the
// others ended the run uncaught with fewer than n: they say nothing either
// way). A lie in a job whose output cannot be checked is caught only if the
// buyer notices it; CaughtWithinAll counts every contract.
func (r Result) CaughtWithin(k Kind, n int) (caught, known int) {
	return caughtWithin(r.Caught[k], r.Served[k], n)
}

// CaughtWithinAll is CaughtWithin counting all of the cheats' contracts.
func (r Result) CaughtWithinAll(k Kind, n int) (caught, known int) {
	return caughtWithin(r.CaughtAll[k], r.ServedAll[k], n)
}

func caughtWithin(at, served []int, n int) (caught, known int) {
	for i, c := range at {
		switch {
		case c >= 0 && c <= n:
			caught++
			known++
		case served[i] >= n:
			known++
		}
	}
	return caught, known
}

// LostPer1000 is the value lost to cheats per 1,000 market contracts.
func (r Result) LostPer1000() float64 { return r.LostSats / float64(r.Contracts) * 1000 }

// SybilShare is the Sybil ring's share of all contracts.
func (r Result) SybilShare() float64 {
	return float64(r.SybilWins) / float64(r.Contracts+r.Extra)
}

// IsolationStats returns how many cheats were isolated, of how many, and
// the median and maximum contracts it took.
func (r Result) IsolationStats() (isolated, total, median, max int) {
	var xs []int
	for _, l := range r.Isolation {
		for _, x := range l {
			total++
			if x >= 0 {
				xs = append(xs, x)
			}
		}
	}
	median, max = stats(xs)
	return len(xs), total, median, max
}

// FirstJobStats returns how many late honest sellers got work, and the
// median and maximum wait in market contracts.
func (r Result) FirstJobStats() (served, total, median, max int) {
	var xs []int
	for _, x := range r.FirstJob {
		if x >= 0 {
			xs = append(xs, x)
		}
	}
	median, max = stats(xs)
	return len(xs), len(r.FirstJob), median, max
}

func stats(xs []int) (median, max int) {
	if len(xs) == 0 {
		return -1, -1
	}
	s := append([]int(nil), xs...)
	sort.Ints(s)
	return s[len(s)/2], s[len(s)-1]
}

type world struct {
	cfg     Config
	policy  Policy
	sellers []*seller
	buyers  []*buyer
	ledger  ledger
	now     time.Time
	market  *rand.Rand // jobs: identical across policies
	pick    *rand.Rand // the policy's own randomness
	fate    *rand.Rand // outcomes
	res     Result
	ctx     context.Context
	sybils  []*seller
	byID    map[peer.ID]*seller
	nextID  int
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Run simulates one policy.
func Run(cfg Config, p Policy) (Result, error) {
	return runWorld(cfg, p, nil, nil)
}

func runWorld(cfg Config, p Policy, hook func(*world, int), out **world) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	w := &world{
		cfg: cfg, policy: p, ledger: ledger{}, now: epoch, ctx: context.Background(),
		market: rand.New(rand.NewPCG(cfg.Seed, 1)),
		pick:   rand.New(rand.NewPCG(cfg.Seed, 2+uint64(p))),
		fate:   rand.New(rand.NewPCG(cfg.Seed, 10+uint64(p))),
		res: Result{Policy: p, Contracts: cfg.Contracts, LostByKind: map[Kind]float64{},
			Isolation: map[Kind][]int{}, Caught: map[Kind][]int{}, Served: map[Kind][]int{},
			CaughtAll: map[Kind][]int{}, ServedAll: map[Kind][]int{}, Rejected: map[reputation.Reason]uint64{}},
	}
	if err := w.build(); err != nil {
		return Result{}, err
	}
	for i := 0; i < cfg.Contracts; i++ {
		w.now = epoch.Add(time.Duration(i+1) * time.Minute)
		if hook != nil {
			hook(w, i)
		}
		if err := w.contract(i); err != nil {
			return Result{}, err
		}
	}
	if out != nil {
		*out = w
	}
	w.finish()
	return w.res, nil
}

// RunAll simulates the three policies on the same market.
func RunAll(cfg Config) ([]Result, error) {
	var out []Result
	for _, p := range []Policy{Random, Cheapest, Blackbox} {
		r, err := Run(cfg, p)
		if err != nil {
			return nil, fmt.Errorf("simulate %s: %w", p, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (w *world) build() error {
	cfg := w.cfg
	keys := rand.NewChaCha8(seed32(cfg.Seed))
	newKey := func() (crypto.PrivKey, peer.ID, error) {
		k, _, err := crypto.GenerateEd25519Key(keys)
		if err != nil {
			return nil, "", err
		}
		id, err := peer.IDFromPrivateKey(k)
		return k, id, err
	}
	cheats := int(math.Round(float64(cfg.Sellers) * cfg.CheatShare))
	others := cheats - cfg.SybilRing
	kinds := make([]Kind, cfg.Sellers)
	for i := range kinds {
		switch {
		case i < cfg.SybilRing:
			kinds[i] = Sybil
		case i < cheats:
			kinds[i] = []Kind{Garbage, Vanish, Inflate}[(i-cfg.SybilRing)*3/max(others, 1)]
		case i < cheats+cfg.Occasional:
			kinds[i] = Occasional
		default:
			kinds[i] = Honest
		}
	}
	setup := rand.New(rand.NewPCG(cfg.Seed, 99))
	setup.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	late := 0
	for range kinds {
		k, id, err := newKey()
		if err != nil {
			return err
		}
		s := &seller{id: id, key: k, first: -1, last: -1, caught: -1, caughtAll: -1, survive: 1}
		w.sellers = append(w.sellers, s)
	}
	for i, s := range w.sellers {
		s.kind = kinds[i]
		s.busy = make([]int, cfg.Slots)
		switch s.kind {
		case Honest, Occasional:
			s.price = 100 * (0.8 + 0.5*setup.Float64())
			if late < cfg.LateHonest {
				// Late joiners arrive spread over 20%..80% of the run.
				s.join = cfg.Contracts/5 + late*(cfg.Contracts*3/5)/max(cfg.LateHonest, 1)
				late++
			}
		case Garbage, Sybil:
			s.price = 100 * (0.6 + 0.3*setup.Float64()) // undercut: costs them nothing
		case Vanish:
			s.price = 100 * (0.7 + 0.4*setup.Float64())
		case Inflate:
			s.price = 100 * (0.6 + 0.3*setup.Float64()) // cheap offer, inflated bill
		}
		if s.kind == Sybil {
			w.sybils = append(w.sybils, s)
		}
	}
	w.byID = map[peer.ID]*seller{}
	for _, s := range w.sellers {
		w.byID[s.id] = s
	}
	for i := 0; i < cfg.Buyers; i++ {
		k, id, err := newKey()
		if err != nil {
			return err
		}
		b := &buyer{id: id, key: k}
		if w.policy == Blackbox {
			b.book, err = reputation.NewBook(reputation.Options{
				Config: cfg.Reputation, Self: id, Evidence: w.ledger, Now: func() time.Time { return w.now },
			})
			if err != nil {
				return err
			}
		}
		w.buyers = append(w.buyers, b)
	}
	if w.policy != Blackbox {
		return nil
	}
	// Each buyer trusts a few others and publishes it.
	for _, b := range w.buyers {
		for _, j := range setup.Perm(len(w.buyers))[:cfg.TrustPerBuyer+1] {
			o := w.buyers[j]
			if o == b {
				continue
			}
			if err := b.book.SetTrust(o.id, 0.9); err != nil {
				return err
			}
			env, err := reputation.SealTrustStatement(&reputation.TrustStatement{
				Version: reputation.RecordVersion, Truster: b.id, Subject: o.id, WeightPM: 900, IssuedAt: w.now,
			}, b.key)
			if err != nil {
				return err
			}
			w.broadcast(b.id, env)
		}
	}
	return w.sybilCampaign(setup)
}

// sybilCampaign: the ring trusts itself, runs paid fake contracts among its
// identities and floods buyers with glowing attestations, plus some unpaid,
// self-referencing and replayed ones.
func (w *world) sybilCampaign(r *rand.Rand) error {
	ring := w.sybils
	if len(ring) < 2 {
		return nil
	}
	for _, s := range ring {
		for k := 0; k < w.cfg.SybilVouches; k++ {
			o := ring[r.IntN(len(ring))]
			if o == s {
				continue
			}
			id := w.newContractID()
			paid := uint64(5000)
			if k%5 == 4 {
				paid = 0 // not even paid: must count for nothing
			}
			w.ledger[id] = reputation.PaidContract{Buyer: s.id, Seller: o.id, PaidSats: paid}
			a := &reputation.Attestation{Version: reputation.RecordVersion, ContractID: id, Attester: s.id,
				Subject: o.id, Outcome: reputation.OutcomeCompleted, UsagePermille: 1000, PaidSats: 5000,
				IssuedAt: w.now, Expires: w.now.Add(w.cfg.Reputation.AttestationTTL)}
			env, err := reputation.SealAttestation(a, s.key)
			if err != nil {
				return err
			}
			w.broadcast(s.id, env)
			if k == 0 {
				w.broadcast(s.id, env) // replay
				self := *a
				self.Subject, self.ContractID = s.id, w.newContractID()
				if env, err = reputation.SealAttestation(&self, s.key); err != nil {
					return err
				}
				w.broadcast(s.id, env)
			}
		}
		st := &reputation.TrustStatement{Version: reputation.RecordVersion, Truster: s.id,
			Subject: ring[(r.IntN(len(ring)-1)+1+indexOf(ring, s))%len(ring)].id, WeightPM: 1000, IssuedAt: w.now}
		env, err := reputation.SealTrustStatement(st, s.key)
		if err != nil {
			return err
		}
		w.broadcast(s.id, env)
	}
	return nil
}

func indexOf(l []*seller, s *seller) int {
	for i, x := range l {
		if x == s {
			return i
		}
	}
	return -1
}

func seed32(s uint64) [32]byte {
	var b [32]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(s >> (8 * i))
	}
	b[31] = 0xbb
	return b
}

func (w *world) newContractID() string {
	w.nextID++
	return fmt.Sprintf("c%07d", w.nextID)
}

// broadcast delivers a signed record to every buyer but its author, each of
// which verifies it in full.
func (w *world) broadcast(from peer.ID, env []byte) {
	for _, b := range w.buyers {
		if b.id == from || b.book == nil {
			continue
		}
		_ = b.book.AddRecord(w.ctx, from, env) // rejections are counted by the book
	}
}

type job struct {
	units         float64
	dur           int
	deterministic bool
}

type run struct {
	s      *seller
	id     string
	obs    reputation.Observation
	digest string // "" when no result
	paid   float64
	lost   float64
}

func (w *world) contract(i int) error {
	b := w.buyers[w.market.IntN(len(w.buyers))]
	j := job{units: 1 + 9*w.market.Float64(), dur: 5 + w.market.IntN(56), deterministic: w.market.Float64() < w.cfg.Deterministic}
	var cands []reputation.Candidate
	for _, s := range w.sellers {
		if s.join <= i && s.free(i) >= 0 {
			cands = append(cands, reputation.Candidate{Peer: s.id, PriceSats: uint64(s.price * j.units),
				RTT: time.Duration(10+int(hash(b.id, s.id)%190)) * time.Millisecond, Ref: s})
		}
	}
	if len(cands) == 0 {
		return nil
	}
	var ranked []reputation.Ranked
	switch w.policy {
	case Random:
		ranked = []reputation.Ranked{{Candidate: cands[w.pick.IntN(len(cands))]}}
	case Cheapest:
		best := cands[0]
		for _, c := range cands[1:] {
			if c.PriceSats < best.PriceSats {
				best = c
			}
		}
		ranked = []reputation.Ranked{{Candidate: best}}
	case Blackbox:
		var opts []reputation.RankOption
		if !j.deterministic {
			opts = append(opts, reputation.Uncheckable())
		}
		ranked, _ = b.book.Rank(cands, w.pick, opts...)
		if len(ranked) == 0 {
			return nil // every seller blocked: the buyer waits
		}
	}
	primary := ranked[0].Ref.(*seller)
	first := w.execute(i, b, primary, j)
	runs := []*run{first}
	var verdicts []reputation.Observation
	if w.policy == Blackbox && j.deterministic && first.digest != "" {
		w.exposed(primary, b.book.SpotCheckChance(primary.id))
	}
	if w.policy == Blackbox && first.digest != "" && b.book.ShouldSpotCheck(primary.id, j.deterministic, w.pick) {
		w.res.SpotChecks++
		var decided bool
		runs, verdicts, decided = w.spotCheck(i, b, j, cands, first)
		if decided && primary.kind == Inflate {
			// The checker's receipt shows the usage the job really
			// needs: the inflated bill is visible.
			first.obs.UsageRatio = 1 / 1.4 * (1 - math.Abs(w.fate.NormFloat64()*0.02))
		}
	}
	// How each contract ended, then the spot check's verdicts: the order
	// in which the buyer engine reports them to the node's book.
	for _, r := range runs {
		if err := w.record(b, r.s, r.obs); err != nil {
			return err
		}
	}
	for _, v := range verdicts {
		if err := w.record(b, w.byID[v.Peer], v); err != nil {
			return err
		}
	}
	return nil
}

// exposed notes that honest seller s ran a checkable contract that was
// spot-checked with probability chance (see Result.CatchChance).
func (w *world) exposed(s *seller, chance float64) {
	if s.kind == Honest && s.checkable <= 50 {
		s.survive *= 1 - w.cfg.OccasionalShare*chance
	}
}

// spotCheck re-runs job j, whose first run came back, as the buyer engine
// does (pkg/contract's spotCheck): up to two re-runs, each on the best
// seller for a spot check not yet tried (Book.Rank with ForSpotCheck), a
// re-run that brings no result tried once more elsewhere and otherwise
// ending the check; it stops as soon as a digest has a majority.
func (w *world) spotCheck(i int, b *buyer, j job, cands []reputation.Candidate, first *run) (runs []*run, verdicts []reputation.Observation, decided bool) {
	checkers, _ := b.book.Rank(cands, w.pick, reputation.ForSpotCheck())
	used := map[*seller]bool{first.s: true}
	next := func() *seller {
		for _, c := range checkers {
			if s := c.Ref.(*seller); !used[s] {
				used[s] = true
				return s
			}
		}
		return nil
	}
	runs = []*run{first}
	results := []reputation.SpotResult{{Peer: first.s.id, ContractID: first.id, Digest: first.digest}}
	for n := 0; n < 2 && !decided; n++ {
		var got *run
		for try := 0; try < 2 && got == nil; try++ {
			c := next()
			if c == nil {
				break
			}
			r := w.execute(i, b, c, j)
			w.res.Extra++
			w.res.ExtraPaid += r.paid
			if i >= w.cfg.MeasureFrom {
				w.res.SteadyExtraPaid += r.paid
			}
			runs = append(runs, r)
			if r.digest != "" {
				got = r
				w.exposed(c, 1) // a checker's output is always compared
			}
		}
		if got == nil {
			break
		}
		results = append(results, reputation.SpotResult{Peer: got.s.id, ContractID: got.id, Digest: got.digest})
		verdicts, decided = reputation.ResolveSpotCheck(results, w.now)
	}
	return runs, verdicts, decided
}

func (s *seller) free(i int) int {
	for k, end := range s.busy {
		if end <= i {
			return k
		}
	}
	return -1
}

func hash(a, b peer.ID) uint64 {
	h := uint64(1469598103934665603)
	for _, s := range []string{string(a), string(b)} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * 1099511628211
		}
	}
	return h
}

// execute runs job j of buyer b on seller s and returns what the buyer
// observes before any spot check.
func (w *world) execute(i int, b *buyer, s *seller, j job) *run {
	if k := s.free(i); k >= 0 {
		s.busy[k] = i + j.dur
	}
	s.wins++
	if j.deterministic {
		s.checkable++
	}
	if s.first < 0 {
		s.first = i
	}
	s.last = i
	if s.kind != Honest {
		w.res.CheatWins++
	}
	if s.kind == Sybil {
		w.res.SybilWins++
	}
	price := s.price * j.units
	r := &run{s: s, id: w.newContractID(), paid: price, digest: fmt.Sprintf("ok-%d", i)}
	r.obs = reputation.Observation{Peer: s.id, ContractID: r.id, Outcome: reputation.OutcomeCompleted, At: w.now}
	f := w.fate.Float64()
	kind := s.kind
	if kind == Occasional {
		kind = Honest
		if w.fate.Float64() < w.cfg.OccasionalShare {
			kind = Garbage
		}
	}
	switch kind {
	case Honest:
		switch {
		case f < 0.02:
			r.obs.Outcome, r.digest = reputation.OutcomeFailed, ""
		case f < 0.07:
			r.obs.Outcome = reputation.OutcomeLate
		}
		if w.fate.Float64() < w.cfg.UsageVisible {
			r.obs.UsageRatio = 1 - math.Abs(w.fate.NormFloat64()*0.02)
		}
	case Garbage, Sybil:
		r.digest = fmt.Sprintf("garbage-%d-%d", i, w.fate.Uint64())
		r.lost = price
		if f < w.cfg.NoticeGarbage {
			r.obs.Outcome = reputation.OutcomeInvalid
		}
	case Vanish:
		// Paid interval by interval in advance, then gone with no result.
		r.paid = price * (0.1 + 0.5*f)
		r.lost = r.paid
		r.obs.Outcome, r.digest = reputation.OutcomeAbandoned, ""
	case Inflate:
		r.paid = price * 1.4
		r.lost = r.paid - price
		if w.fate.Float64() < w.cfg.UsageVisible {
			r.obs.UsageRatio = 1 / 1.4 * (1 - math.Abs(w.fate.NormFloat64()*0.02))
		}
	}
	w.res.PaidSats += r.paid
	if i >= w.cfg.MeasureFrom {
		w.res.SteadyPaid += r.paid
	}
	w.res.LostSats += r.lost
	w.res.LostByKind[s.kind] += r.lost
	// sats per unit ×100: every contract is above min_paid_sats
	w.ledger[r.id] = reputation.PaidContract{Buyer: b.id, Seller: s.id, PaidSats: uint64(math.Max(r.paid, 0) * 100)}
	return r
}

// record: the buyer keeps its observation about s and attests it to every
// buyer.
func (w *world) record(b *buyer, s *seller, o reputation.Observation) error {
	if (o.Outcome == reputation.OutcomeInvalid || o.Outcome == reputation.OutcomeSpotCheckMismatch) && s.caught < 0 {
		s.caught, s.caughtAll = s.checkable, s.wins
	}
	if b.book == nil {
		return nil
	}
	if err := b.book.Observe(o); err != nil {
		return err
	}
	env, err := reputation.SealAttestation(b.book.NewAttestation(b.id, o, w.ledger[o.ContractID].PaidSats, nil), b.key)
	if err != nil {
		return err
	}
	w.broadcast(b.id, env)
	return nil
}

func (w *world) finish() {
	tail := w.cfg.Contracts - w.cfg.Contracts/10
	for _, s := range w.sellers {
		switch {
		case s.kind == Honest && s.join > 0:
			if s.first < 0 {
				w.res.FirstJob = append(w.res.FirstJob, -1)
			} else {
				w.res.FirstJob = append(w.res.FirstJob, s.first-s.join)
			}
		case s.kind != Honest:
			x := s.last + 1 - s.join
			if s.last >= tail {
				x = -1
			}
			w.res.Isolation[s.kind] = append(w.res.Isolation[s.kind], x)
			w.res.Caught[s.kind] = append(w.res.Caught[s.kind], s.caught)
			w.res.Served[s.kind] = append(w.res.Served[s.kind], s.checkable)
			w.res.CaughtAll[s.kind] = append(w.res.CaughtAll[s.kind], s.caughtAll)
			w.res.ServedAll[s.kind] = append(w.res.ServedAll[s.kind], s.wins)
		}
	}
	for _, s := range w.sellers {
		if s.kind != Honest || w.policy != Blackbox {
			continue
		}
		if s.checkable >= 50 {
			w.res.CatchChance = append(w.res.CatchChance, 1-s.survive)
		}
		n := 0
		for _, b := range w.buyers {
			if b.book.Blocked(s.id) {
				n++
			}
		}
		if n*2 > len(w.buyers) {
			w.res.HonestBlocked++
		}
	}
	for _, b := range w.buyers {
		if b.book == nil {
			continue
		}
		for k, v := range b.book.Rejections() {
			w.res.Rejected[k] += v
		}
		w.res.Accepted += b.book.Accepted()
	}
}

// PrintTable writes the comparison the issue asks for.
func PrintTable(out io.Writer, cfg Config, rs []Result) {
	fmt.Fprintf(out, "blackbox market simulation: seed %d, %d sellers (%d cheats, Sybil ring %d, %d honest join late), %d buyers, %d contracts\n\n",
		cfg.Seed, cfg.Sellers, int(math.Round(float64(cfg.Sellers)*cfg.CheatShare)), cfg.SybilRing, cfg.LateHonest, cfg.Buyers, cfg.Contracts)
	var base float64
	for _, r := range rs {
		if r.Policy == Random {
			base = r.LostPer1000()
		}
	}
	fmt.Fprintf(out, "%-15s %14s %9s %22s %20s %8s %8s\n", "policy", "lost/1000 ctr", "vs random", "cheats isolated (med/max)", "new seller 1st job", "sybil", "checks")
	for _, r := range rs {
		iso, tot, imed, imax := r.IsolationStats()
		srv, ftot, fmed, fmax := r.FirstJobStats()
		rel := "-"
		if base > 0 {
			rel = fmt.Sprintf("%.1f%%", 100*r.LostPer1000()/base)
		}
		fmt.Fprintf(out, "%-15s %10.0f sat %9s %10s %11s %8s %11s %7.2f%% %8d\n", r.Policy, r.LostPer1000(), rel,
			fmt.Sprintf("%d/%d", iso, tot), medmax(imed, imax), fmt.Sprintf("%d/%d", srv, ftot), medmax(fmed, fmax),
			100*r.SybilShare(), r.SpotChecks)
	}
	fmt.Fprintln(out, "\nlost/1000 ctr: sats paid to cheats for nothing (garbage, vanished jobs, inflated bills) per 1,000 contracts")
	fmt.Fprintln(out, "cheats isolated: cheats that won nothing in the last 10% of the run; med/max = market contracts until their last win")
	fmt.Fprintln(out, "new seller 1st job: late honest sellers that got work; med/max = market contracts from joining to first job")
	for _, r := range rs {
		if r.Policy != Blackbox {
			continue
		}
		fmt.Fprintf(out, "\nblackbox detail: %d spot checks, %d re-run contracts on top of %d, %.1f%% of all spending; lost by kind:",
			r.SpotChecks, r.Extra, r.Contracts, 100*r.CheckShare())
		for k := Garbage; k <= Occasional; k++ {
			fmt.Fprintf(out, " %s %.0f", k, r.LostByKind[k]/float64(r.Contracts)*1000)
		}
		fmt.Fprintf(out, "\nhonest sellers blocked by most buyers at the end: %d", r.HonestBlocked)
		fmt.Fprintf(out, "\nrecords accepted %d; ignored:", r.Accepted)
		var keys []string
		for k := range r.Rejected {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(out, " %s %d", k, r.Rejected[reputation.Reason(k)])
		}
		fmt.Fprintln(out)
	}
}

func medmax(m, x int) string {
	if m < 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", m, x)
}

// Scenarios are the markets the goals are measured in, all with base's
// seed and reputation config (the policy under test): base itself, the
// steady market (SteadyConfig) and the catch market (CatchConfig).
func Scenarios(base Config) (market, steady, catch Config) {
	steady, catch = SteadyConfig(), CatchConfig()
	steady.Seed, catch.Seed = base.Seed, base.Seed
	steady.Reputation, catch.Reputation = base.Reputation, base.Reputation
	return base, steady, catch
}

// Report is one seed's measurements: the three policies in the market, the
// blackbox policy in the steady and catch markets, and the goals.
type Report struct {
	Seed   uint64
	Market []Result
	Steady Result
	Catch  Result
	Goals  []Goal
}

// Goal is one of the goals the shipped policy must meet, as measured, or,
// with Target "info", a number that explains one (Met is then unused).
// A goal on a share (PoolSum of PoolN) is judged on the share pooled over
// every seed reported, at least PoolMin.
type Goal struct {
	Name   string
	Target string
	Value  string
	Met    bool
	// PoolSum over PoolN is the goal's share for pooling over seeds.
	PoolSum float64
	PoolN   int
	PoolMin float64
}

// Measure runs the scenarios for base and checks the goals.
func Measure(base Config) (Report, error) {
	market, steady, catch := Scenarios(base)
	rs, err := RunAll(market)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Seed: base.Seed, Market: rs}
	if rep.Steady, err = Run(steady, Blackbox); err != nil {
		return Report{}, fmt.Errorf("simulate steady market: %w", err)
	}
	if rep.Catch, err = Run(catch, Blackbox); err != nil {
		return Report{}, fmt.Errorf("simulate catch market: %w", err)
	}
	var random, bb Result
	for _, r := range rs {
		switch r.Policy {
		case Random:
			random = r
		case Blackbox:
			bb = r
		}
	}
	caught, known := rep.Catch.CaughtWithin(Occasional, 50)
	share := float64(caught) / math.Max(float64(known), 1)
	caughtAll, knownAll := rep.Catch.CaughtWithinAll(Occasional, 50)
	chances := append(append([]float64(nil), rep.Catch.CatchChance...), rep.Steady.CatchChance...)
	chance := 0.0
	for _, c := range chances {
		chance += c
	}
	loss := bb.LostPer1000() / math.Max(random.LostPer1000(), 1e-9)
	served, total, _, slowest := bb.FirstJobStats()
	first := fmt.Sprintf("%d", slowest)
	if served < total {
		first = fmt.Sprintf("%d of %d never", total-served, total)
	}
	rep.Goals = []Goal{
		{Name: "10% cheat caught within 50 checkable contracts", Target: "≥ 99%",
			Value:   fmt.Sprintf("%.2f%% (%d)", 100*chance/math.Max(float64(len(chances)), 1), len(chances)),
			Met:     len(chances) > 0 && chance/float64(len(chances)) >= 0.99,
			PoolSum: chance, PoolN: len(chances), PoolMin: 0.99},
		{Name: "  … occasional cheats caught, counted", Target: "info",
			Value: fmt.Sprintf("%.1f%% (%d/%d)", 100*share, caught, known), PoolSum: float64(caught), PoolN: known},
		{Name: "  … within 50 of all their contracts (20% uncheckable)", Target: "info",
			Value: fmt.Sprintf("%d/%d", caughtAll, knownAll), PoolSum: float64(caughtAll), PoolN: knownAll},
		{Name: "spot-check spending, steady market's 2nd half", Target: "≤ 5%",
			Value: fmt.Sprintf("%.2f%%", 100*rep.Steady.SteadyCheckShare()), Met: rep.Steady.SteadyCheckShare() <= 0.05},
		{Name: "  … spending in the young market (every seller new)", Target: "info",
			Value: fmt.Sprintf("%.1f%%", 100*bb.CheckShare()), Met: true},
		{Name: "cheat loss vs random selection (market)", Target: "≤ 10%", Value: fmt.Sprintf("%.1f%%", 100*loss), Met: loss <= 0.10},
		{Name: "newcomer's first job, slowest (market contracts)", Target: "≤ 50", Value: first, Met: served == total && slowest <= 50},
		{Name: "Sybil ring's share of work (market)", Target: "< 1%", Value: fmt.Sprintf("%.2f%%", 100*bb.SybilShare()), Met: bb.SybilShare() < 0.01},
	}
	return rep, nil
}

// PrintGoals writes the goals of every report side by side, one column per
// seed, and the policy's own worst-case catch probability.
func PrintGoals(out io.Writer, cfg reputation.Config, reps []Report) {
	fmt.Fprintf(out, "goals of the shipped policy (reputation defaults: exploration %.2f, spot checks: all below %.0f verified, then 1/n, floor %.0f%%)\n",
		cfg.Exploration, cfg.SpotCheckAllBelow, 100*cfg.SpotCheckFloor)
	fmt.Fprintf(out, "%-58s %-7s", "goal", "target")
	for _, r := range reps {
		fmt.Fprintf(out, " %15s", fmt.Sprintf("seed %d", r.Seed))
	}
	fmt.Fprintf(out, "  %s\n", "met")
	if len(reps) == 0 {
		return
	}
	for i := range reps[0].Goals {
		g := reps[0].Goals[i]
		fmt.Fprintf(out, "%-58s %-7s", g.Name, g.Target)
		met, sum, n := 0, 0.0, 0
		for _, r := range reps {
			fmt.Fprintf(out, " %15s", r.Goals[i].Value)
			if r.Goals[i].Met {
				met++
			}
			sum, n = sum+r.Goals[i].PoolSum, n+r.Goals[i].PoolN
		}
		share := sum / math.Max(float64(n), 1)
		switch {
		case g.PoolMin > 0:
			yes := "yes"
			if n == 0 || share < g.PoolMin {
				yes = "NO"
			}
			fmt.Fprintf(out, "  %s: %.2f%% pooled over %d\n", yes, 100*share, n)
		case n > 0:
			fmt.Fprintf(out, "  %.2f%% pooled over %d\n", 100*share, n)
		case g.Target == "info":
			fmt.Fprintln(out)
		default:
			fmt.Fprintf(out, "  %d/%d\n", met, len(reps))
		}
	}
	fmt.Fprintf(out, "%-58s %-7s %15s\n", "10% cheat caught within 50 (policy, worst case: CatchWithin)", "≥ 99%",
		fmt.Sprintf("%.2f%%", 100*cfg.CatchWithin(0.1, 50)))
	fmt.Fprintf(out, "%-58s %-7s %15s\n", "  … any policy (it lies at least once in 50)", "bound", fmt.Sprintf("%.2f%%", 100*(1-math.Pow(0.9, 50))))
	fmt.Fprintln(out, "\nmarket: the issue's market (above); steady: 40 sellers, 10 buyers, 20,000 contracts, spending over the last 10,000;")
	fmt.Fprintln(out, "catch: 30 honest sellers and 30 that return garbage on 10% of their contracts, 10 buyers, 6,000 contracts;")
	fmt.Fprintln(out, "checkable = deterministic jobs, which a spot check can verify. The goal row: per honest seller with 50 checkable contracts")
	fmt.Fprintln(out, "(catch and steady markets), the chance that checks at the rates it met would catch a seller lying on 10% of them (a cheat")
	fmt.Fprintln(out, "looks honest until caught); counted: occasional cheats caught by a spot check's majority or garbage the buyer noticed,")
	fmt.Fprintln(out, "leaving out those uncaught with fewer than 50 checkable contracts.")
}
