package meter

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// fakeSource is a machine whose numbers the test sets.
type fakeSource struct {
	mu        sync.Mutex
	ncpu      int
	cpu       cpuTimes
	memAvail  uint64
	memTotal  uint64
	diskFree  uint64
	diskTotal uint64
	diskPath  string
}

func (f *fakeSource) cores(context.Context) (int, error) { return f.ncpu, nil }

func (f *fakeSource) cpuTimes(context.Context) (cpuTimes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cpu, nil
}

func (f *fakeSource) memory(context.Context) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.memAvail, f.memTotal, nil
}

func (f *fakeSource) disk(_ context.Context, path string) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.diskPath = path
	return f.diskFree, f.diskTotal, nil
}

// advance adds wall seconds on every core, idle of them idle.
func (f *fakeSource) advance(seconds, idleShare float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := float64(f.ncpu)
	f.cpu.total += seconds * n
	f.cpu.idle += seconds * n * idleShare
}

func (f *fakeSource) setMem(avail uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.memAvail = avail
}

func newFake() *fakeSource {
	return &fakeSource{
		ncpu: 4, cpu: cpuTimes{idle: 1000, total: 4000},
		memAvail: 8 * gib, memTotal: 16 * gib,
		diskFree: 100 * gib, diskTotal: 200 * gib,
	}
}

func testConfig() Config {
	c := DefaultConfig()
	c.Reserve = Reserve{CPU: "500m", Memory: "1GiB", Disk: "10GiB"}
	c.Uplink = "100Mbit"
	c.Timezone = "UTC"
	return c
}

func TestSampleCPUFromDeltas(t *testing.T) {
	src := newFake()
	m, err := newMeter(testConfig(), "/data", nil, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	// Since boot the machine was 25% idle; since New it is 75% idle.
	src.advance(5, 0.75)
	got, err := m.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Capacity{MilliCPU: 3000, Memory: 8 * gib, Disk: 100 * gib, Bandwidth: 100e6}
	if got.Free != want {
		t.Errorf("Free = %v, want %v", got.Free, want)
	}
	if got.Total != (Capacity{MilliCPU: 4000, Memory: 16 * gib, Disk: 200 * gib, Bandwidth: 100e6}) {
		t.Errorf("Total = %v", got.Total)
	}
	if src.diskPath != "/data" {
		t.Errorf("disk measured at %q, want the data dir", src.diskPath)
	}
	// No time passed: the last CPU figure is kept rather than 0 or 100%.
	got, _ = m.Sample(context.Background())
	if got.Free.MilliCPU != 3000 {
		t.Errorf("Free CPU after an empty interval = %d, want 3000", got.Free.MilliCPU)
	}
	src.advance(5, 0.1)
	got, _ = m.Sample(context.Background())
	if got.Free.MilliCPU != 400 {
		t.Errorf("Free CPU = %d, want 400", got.Free.MilliCPU)
	}
}

func TestMeterSpareSubtractsHeld(t *testing.T) {
	src := newFake()
	held := Capacity{MilliCPU: 1000, Memory: 2 * gib}
	m, err := newMeter(testConfig(), "/data", HeldFunc(func() Capacity { return held }), nil, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := m.Spare(time.Now()); r != ReasonNotMeasured {
		t.Errorf("reason before a sample = %q", r)
	}
	src.advance(5, 1)
	if _, err := m.Sample(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, r := m.Spare(time.Now())
	want := Capacity{MilliCPU: 2500, Memory: 5 * gib, Disk: 90 * gib, Bandwidth: 100e6}
	if got != want || r != ReasonSpare {
		t.Errorf("Spare = %v %q, want %v spare", got, r, want)
	}
}

func TestObserveThroughput(t *testing.T) {
	src := newFake()
	m, err := newMeter(testConfig(), "/data", nil, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	// Transfers at 50Mbit/s pull the 100Mbit/s declaration down gradually.
	m.ObserveThroughput(50e6)
	got, _ := m.Sample(context.Background())
	if got.Free.Bandwidth != 90e6 {
		t.Errorf("after one observation: %d, want 90e6", got.Free.Bandwidth)
	}
	for range 50 {
		m.ObserveThroughput(50e6)
	}
	got, _ = m.Sample(context.Background())
	if bw := got.Free.Bandwidth; bw < 49e6 || bw > 51e6 {
		t.Errorf("after many observations: %d, want about 50e6", bw)
	}
	// Faster transfers recover it, but never above the declared uplink.
	for range 100 {
		m.ObserveThroughput(1e9)
	}
	m.ObserveThroughput(0) // ignored
	m.ObserveThroughput(-5)
	got, _ = m.Sample(context.Background())
	if got.Free.Bandwidth != 100e6 {
		t.Errorf("after fast transfers: %d, want the declared 100e6", got.Free.Bandwidth)
	}
}

func TestRunReportsChanges(t *testing.T) {
	src := newFake()
	cfg := testConfig()
	cfg.SampleInterval = 100 * time.Millisecond
	m, changes, stop := runMeter(t, cfg, src)

	first := <-changes
	if first.Memory != 7*gib {
		t.Errorf("first report memory = %s, want 7GiB", quantity.FormatSize(first.Memory))
	}
	if s := m.Snapshot(); s.Spare != first || s.Reason == ReasonNotMeasured {
		t.Errorf("Snapshot = %+v, want spare %v", s, first)
	}
	// A small wobble is not reported; a big drop is.
	src.setMem(8*gib + 100<<20)
	waitFor(t, func() bool { return m.Snapshot().Measured.Free.Memory == 8*gib+100<<20 })
	select {
	case c := <-changes:
		t.Errorf("reported a 1.4%% change: %v", c)
	default:
	}
	src.setMem(3 * gib)
	select {
	case c := <-changes:
		if c.Memory != 2*gib {
			t.Errorf("reported memory %s, want 2GiB", quantity.FormatSize(c.Memory))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report after memory dropped")
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
}

// runMeter runs a meter on src and returns it, its reports, and stop,
// which ends Run and returns its error (the test's cleanup stops it too).
func runMeter(t *testing.T, cfg Config, src *fakeSource) (*Meter, <-chan Capacity, func() error) {
	t.Helper()
	m, err := newMeter(cfg, "/data", nil, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan Capacity, 16)
	m.OnChange = func(c Capacity) { changes <- c }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { stop() })
	return m, changes, stop
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	c := DefaultConfig()
	c.Reserve.Memory = "much"
	if _, err := New(c, t.TempDir(), nil, nil); err == nil {
		t.Fatal("New accepted a bad config")
	}
}

// TestSampleReal reads this machine through gopsutil, with a data dir that
// does not exist yet (its parent's filesystem is measured).
func TestSampleReal(t *testing.T) {
	m, err := New(DefaultConfig(), filepath.Join(t.TempDir(), "not", "yet"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got.Total.MilliCPU < 1000 || got.Total.Memory <= 0 || got.Total.Disk <= 0 {
		t.Errorf("Total = %v, want a real machine", got.Total)
	}
	if got.Free.MilliCPU < 0 || got.Free.MilliCPU > got.Total.MilliCPU ||
		got.Free.Memory <= 0 || got.Free.Memory > got.Total.Memory ||
		got.Free.Disk > got.Total.Disk {
		t.Errorf("Free = %v out of Total = %v", got.Free, got.Total)
	}
}

// BenchmarkSample measures one Sample on this machine: CPU times, memory
// and statfs of the data dir. Cost as a share of a core is
// ns/op ÷ (SampleInterval in ns); at the default 5s, 50µs is 0.001%.
func BenchmarkSample(b *testing.B) {
	m, err := New(DefaultConfig(), b.TempDir(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
	perSample := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(100*perSample/float64(DefaultConfig().SampleInterval.Nanoseconds()), "%core@5s")
}

// TestSetConfigLive changes the policy of a running meter: a bad config
// changes nothing; a good one is reported at once, with the new reserve
// applied and the new prices in Policy, although the machine did not move.
func TestSetConfigLive(t *testing.T) {
	src := newFake()
	cfg := testConfig()
	cfg.SampleInterval = time.Hour // only SetConfig can cause a second report
	m, changes, _ := runMeter(t, cfg, src)
	if first := <-changes; first.Memory != 7*gib {
		t.Fatalf("first report memory = %s, want 7GiB", quantity.FormatSize(first.Memory))
	}

	bad := cfg
	bad.Pricing.CoreHour = -1
	bad.Reserve.Memory = "lots"
	if err := m.SetConfig(bad); err == nil {
		t.Fatal("SetConfig accepted a negative price and a bad size")
	}
	if p := m.Policy(); p.Pricing.CoreHour != cfg.Pricing.CoreHour || p.Reserve.Memory != gib {
		t.Fatalf("a refused config changed the policy: %+v", p)
	}

	next := cfg
	next.Pricing.CoreHour = 42
	next.Reserve.Memory = "2GiB"
	if err := m.SetConfig(next); err != nil {
		t.Fatal(err)
	}
	if p := m.Policy(); p.Pricing.CoreHour != 42 {
		t.Errorf("Policy().Pricing.CoreHour = %v, want 42", p.Pricing.CoreHour)
	}
	select {
	case c := <-changes:
		if c.Memory != 6*gib {
			t.Errorf("after SetConfig memory on offer = %s, want 6GiB", quantity.FormatSize(c.Memory))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SetConfig was not reported")
	}
	// A SetConfig that changes no capacity is still reported: prices moved.
	next.Pricing.CoreHour = 43
	if err := m.SetConfig(next); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("a price-only SetConfig was not reported")
	}
}
