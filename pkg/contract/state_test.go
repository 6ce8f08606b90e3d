package contract

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// faultStore fails the next n Updates on demand, like lnd's mock
// arbitrator log: nothing of a failed Update is kept.
type faultStore struct {
	Store
	fail atomic.Int32
}

var errInjected = errors.New("injected store failure")

func (f *faultStore) Update(fn func(KV) error) error {
	if f.fail.Load() > 0 {
		f.fail.Add(-1)
		return errInjected
	}
	return f.Store.Update(fn)
}

// manualClock is a clock the test moves by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestStateStringsAndMap(t *testing.T) {
	for s := StateProposed; s <= StateDisputed; s++ {
		back, err := ParseState(s.String())
		if err != nil || back != s {
			t.Fatalf("%d: %v", s, err)
		}
		for _, to := range transitions[s] {
			if to == s {
				t.Fatalf("%s moves to itself", s)
			}
		}
	}
	finals := []State{StateSettled, StateRejected, StateExpired, StateRefunded}
	for _, s := range finals {
		if !s.Final() {
			t.Fatalf("%s should be final", s)
		}
	}
	// Every non-final state has a timeout.
	r := &Record{Proposal: &Proposal{Expiry: t0.Add(time.Minute)}}
	for s := range transitions {
		if (Timeouts{}).withDefaults().deadline(r, s, t0).IsZero() {
			t.Fatalf("%s has no timeout", s)
		}
	}
}

func TestMoveTable(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateProposed, StateAccepted, true},
		{StateAccepted, StateRunning, false},
		{StateRunning, StateCompleted, true},
		{StateCompleted, StateSettled, true},
		{StateSettled, StateFailed, false},
		{StateFailed, StateRefunded, true},
		{StateRunning, StateRunning, true}, // idempotent
	}
	for _, tc := range tests {
		m := NewMachine(NewMemStore(), Timeouts{}, func() time.Time { return t0 }, nil)
		if err := m.Create(&Record{ID: "x", Role: RoleBuyer, State: tc.from}); err != nil {
			t.Fatal(err)
		}
		_, err := m.Move(RoleBuyer, "x", tc.to, "test", nil)
		if (err == nil) != tc.ok {
			t.Errorf("%s → %s: err %v, want ok=%v", tc.from, tc.to, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadTransition) {
			t.Errorf("%s → %s: %v is not ErrBadTransition", tc.from, tc.to, err)
		}
	}
}

// TestCrashAndRecover: admission, then a store that fails mid-way, then a
// "restart" (a new Machine over the same data) that recovers each contract
// to where it belongs and releases what it held.
func TestCrashAndRecover(t *testing.T) {
	clk := &manualClock{t: t0}
	fs := &faultStore{Store: NewMemStore()}
	m := NewMachine(fs, Timeouts{Start: time.Minute, RunGrace: time.Minute, Settle: time.Minute}, clk.Now, nil)
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	mk := func(id string, state State) {
		t.Helper()
		p := &Proposal{Request: Request{Duration: time.Minute, Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}}, Expiry: t0.Add(time.Minute)}
		err := fs.Update(func(kv KV) error {
			if err := admit(kv, Reservation{ID: id, Resources: p.Request.Resources, Until: t0.Add(time.Minute)}, capacity, p.Expiry, clk.Now()); err != nil {
				return err
			}
			return m.create(kv, &Record{ID: id, Role: RoleSeller, State: StateAccepted, Proposal: p})
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []State{StateFunded, StateRunning, StateCompleted} {
			if s > state {
				break
			}
			if _, err := m.Move(RoleSeller, id, s, "", func(r *Record) { r.Paid = 3 }); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("accepted", StateAccepted)
	mk("funded", StateFunded)
	mk("running", StateRunning)
	mk("completed", StateCompleted)
	if held, _ := m.Held(); held.CPUMillis != 3000 {
		t.Fatalf("held %d millicores, want 3000 (completed releases)", held.CPUMillis)
	}
	if err := fs.Update(func(kv KV) error {
		return admit(kv, Reservation{ID: "big", Resources: offer.Resources{CPUMillis: 2000}, Until: t0.Add(time.Hour)}, capacity, t0.Add(time.Minute), t0)
	}); !errors.Is(err, ErrCapacity) {
		t.Fatalf("oversell: %v", err)
	}
	if err := fs.Update(func(kv KV) error {
		return admit(kv, Reservation{ID: "running", Resources: offer.Resources{}, Until: t0.Add(time.Hour)}, capacity, t0.Add(time.Minute), t0)
	}); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}

	// The store fails: the move is refused and nothing changes.
	fs.fail.Store(1)
	if _, err := m.Move(RoleSeller, "running", StateCompleted, "", nil); !errors.Is(err, errInjected) {
		t.Fatalf("move with failing store: %v", err)
	}
	if r, _ := m.Get(RoleSeller, "running"); r.State != StateRunning {
		t.Fatalf("failed move changed state to %s", r.State)
	}

	// Restart: a new machine over the same data.
	clk.Add(30 * time.Second)
	m2 := NewMachine(fs, Timeouts{Start: time.Minute, RunGrace: time.Minute, Settle: time.Minute}, clk.Now, nil)
	fs.fail.Store(1) // the first recovery step fails too; Recover is simply re-run
	if _, err := m2.Recover(); !errors.Is(err, errInjected) {
		t.Fatalf("recover with failing store: %v", err)
	}
	if _, err := m2.Recover(); err != nil {
		t.Fatal(err)
	}
	want := map[string]State{"accepted": StateAccepted, "funded": StateFunded, "running": StateFailed, "completed": StateCompleted}
	for id, s := range want {
		if r, _ := m2.Get(RoleSeller, id); r.State != s {
			t.Errorf("%s after recover: %s, want %s", id, r.State, s)
		}
	}
	if held, _ := m2.Held(); held.CPUMillis != 2000 {
		t.Fatalf("held %d after recover, want 2000 (the failed run released)", held.CPUMillis)
	}
	// Time passes beyond every timeout: everything ends, nothing is held.
	for i := 0; i < 5; i++ {
		clk.Add(2 * time.Minute)
		if _, err := m2.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	want = map[string]State{"accepted": StateExpired, "funded": StateSettled, "running": StateSettled, "completed": StateSettled}
	for id, s := range want {
		if r, _ := m2.Get(RoleSeller, id); r.State != s {
			t.Errorf("%s at the end: %s, want %s", id, r.State, s)
		}
	}
	if held, _ := m2.Held(); held != (offer.Resources{}) {
		t.Fatalf("still held: %+v", held)
	}
}

func TestAdmitConcurrent(t *testing.T) {
	s := NewMemStore()
	capacity := offer.Resources{CPUMillis: 5000, MemoryBytes: 5 << 30}
	var ok, full atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.Update(func(kv KV) error {
				return admit(kv, Reservation{ID: string(rune('A' + i)), Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}, Until: t0.Add(time.Hour)}, capacity, t0.Add(time.Minute), t0)
			})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrCapacity):
				full.Add(1)
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if ok.Load() != 5 || full.Load() != 35 {
		t.Fatalf("admitted %d, refused %d; want 5 and 35", ok.Load(), full.Load())
	}
}
