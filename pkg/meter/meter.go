// Package meter measures what a seller's machine can spare — CPU, memory,
// disk on the data dir's filesystem and uplink bandwidth — and applies the
// operator's policy to it: a reserve kept for the owner, caps, the hours
// and days selling is allowed, and a price floor from the cost of power.
//
// The policy (Config, Policy, Schedule, Capacity) does no I/O; Meter adds
// sampling with gopsutil and a loop that reports changes. The package knows
// nothing about offers: pkg/offer reads Spare and Pricing from it.
package meter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"
)

// Held is what running contracts hold. The contract code implements it;
// it must be cheap and safe to call from any goroutine.
type Held interface {
	// Held returns the capacity reserved by contracts that are accepted
	// and not yet finished.
	Held() Capacity
}

// HeldFunc adapts a function to Held.
type HeldFunc func() Capacity

// Held calls f.
func (f HeldFunc) Held() Capacity { return f() }

// Snapshot is the meter's latest view, for status output and metrics.
type Snapshot struct {
	// Measured is the latest measurement (zero before the first).
	Measured Measured `json:"measured"`
	// Held is what contracts held at that moment.
	Held Capacity `json:"held"`
	// Spare is what is on offer, and Reason why.
	Spare  Capacity `json:"spare"`
	Reason Reason   `json:"reason"`
}

// throughputAlpha is the weight of a new observation in the uplink EWMA:
// about the last ten transfers matter.
const throughputAlpha = 0.2

// Meter samples the machine and computes spare capacity. Its methods are
// safe for concurrent use.
type Meter struct {
	// OnChange, if set before Run, is called from Run's goroutine with the
	// new spare capacity on the first sample and whenever it moves by more
	// than the configured change threshold.
	OnChange func(Capacity)

	dataDir string
	held    Held
	log     *slog.Logger
	src     source
	ncpu    int
	iv      time.Duration

	sampleMu sync.Mutex // serialises Sample: CPU idle is a delta between calls
	prevCPU  cpuTimes

	// kick wakes Run after SetConfig.
	kick chan struct{}

	mu       sync.Mutex
	policy   Policy // replaced whole by SetConfig
	measured Measured
	uplink   float64 // EWMA of observed throughput, ≤ policy.Uplink
	snap     Snapshot
}

// New checks cfg and returns a Meter for the machine, measuring disk on the
// filesystem holding dataDir. held may be nil (nothing held); logger nil
// discards logs.
func New(cfg Config, dataDir string, held Held, logger *slog.Logger) (*Meter, error) {
	return newMeter(cfg, dataDir, held, logger, gopsutilSource{})
}

func newMeter(cfg Config, dataDir string, held Held, logger *slog.Logger, src source) (*Meter, error) {
	p, err := cfg.Policy()
	if err != nil {
		return nil, err
	}
	if held == nil {
		held = HeldFunc(func() Capacity { return Capacity{} })
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n, err := src.cores(context.Background())
	if err != nil || n <= 0 {
		n = runtime.NumCPU()
	}
	m := &Meter{
		policy:  p,
		dataDir: dataDir,
		held:    held,
		log:     logger,
		src:     src,
		ncpu:    n,
		iv:      cfg.SampleInterval,
		kick:    make(chan struct{}, 1),
		uplink:  float64(p.Uplink),
		snap:    Snapshot{Reason: ReasonNotMeasured},
	}
	// The first Sample measures CPU idle since now.
	if t, err := src.cpuTimes(context.Background()); err == nil {
		m.prevCPU = t
	}
	return m, nil
}

// Policy returns the compiled policy, including Pricing for offers.
func (m *Meter) Policy() Policy {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policy
}

// SetConfig replaces the operator's policy of a running meter (prices,
// reserve, caps, hours): cfg is validated first and nothing changes when it
// is wrong. Run then recomputes spare capacity at once and calls OnChange
// even when capacity did not move, so that new prices are offered without
// waiting for a change of capacity. The sample interval is not changed.
func (m *Meter) SetConfig(cfg Config) error {
	p, err := cfg.Policy()
	if err != nil {
		return err
	}
	m.mu.Lock()
	if p.Uplink != m.policy.Uplink {
		m.uplink = float64(p.Uplink) // a new declaration starts the estimate again
	}
	m.policy = p
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return nil
}

// Sample measures the machine now. CPU idle is averaged since the previous
// Sample (or since New), from cumulative CPU times, so it never sleeps.
// The result is kept for Spare.
func (m *Meter) Sample(ctx context.Context) (Measured, error) {
	m.sampleMu.Lock()
	defer m.sampleMu.Unlock()

	now := time.Now()
	ct, err := m.src.cpuTimes(ctx)
	if err != nil {
		return Measured{}, fmt.Errorf("read cpu times: %w", err)
	}
	memAvail, memTotal, err := m.src.memory(ctx)
	if err != nil {
		return Measured{}, fmt.Errorf("read memory: %w", err)
	}
	diskFree, diskTotal, err := m.src.disk(ctx, m.dataDir)
	if err != nil {
		return Measured{}, fmt.Errorf("read disk usage of %s: %w", m.dataDir, err)
	}

	idle := idleFraction(m.prevCPU, ct)
	m.prevCPU = ct

	m.mu.Lock()
	defer m.mu.Unlock()
	total := Capacity{
		MilliCPU:  int64(m.ncpu) * 1000,
		Memory:    clampInt(memTotal),
		Disk:      clampInt(diskTotal),
		Bandwidth: m.policy.Uplink,
	}
	if idle < 0 { // no time passed: keep the last CPU figure
		idle = 0
		if m.measured.Total.MilliCPU > 0 {
			idle = float64(m.measured.Free.MilliCPU) / float64(m.measured.Total.MilliCPU)
		}
	}
	m.measured = Measured{
		At:    now,
		Total: total,
		Free: Capacity{
			MilliCPU:  int64(math.Round(idle * float64(total.MilliCPU))),
			Memory:    clampInt(memAvail),
			Disk:      clampInt(diskFree),
			Bandwidth: int64(m.uplink),
		},
	}
	return m.measured, nil
}

// ObserveThroughput records the rate, in bits/s, that a real upload
// achieved; transfers call it for uploads large enough to fill the link
// (a few MiB). The offered bandwidth follows an exponentially weighted
// average of these, never above the declared uplink: a slow buyer can only
// make the node more modest, not more boastful.
func (m *Meter) ObserveThroughput(bitsPerSec float64) {
	if !(bitsPerSec > 0) || math.IsInf(bitsPerSec, 0) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	est := throughputAlpha*bitsPerSec + (1-throughputAlpha)*m.uplink
	m.uplink = min(est, float64(m.policy.Uplink))
}

// Spare returns the capacity on offer at now from the latest Sample, what
// contracts hold now and the policy, with the reason.
func (m *Meter) Spare(now time.Time) (Capacity, Reason) {
	held := m.held.Held()
	m.mu.Lock()
	measured, policy := m.measured, m.policy
	m.mu.Unlock()
	return policy.Spare(now, measured, held)
}

// Snapshot returns the latest view computed by Run.
func (m *Meter) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

// Run samples every SampleInterval until ctx ends, keeps the Snapshot
// current and calls OnChange when spare capacity changes by more than the
// threshold (and once at the start). A failed sample is logged and the
// previous measurement kept. Run returns nil when ctx is cancelled.
func (m *Meter) Run(ctx context.Context) error {
	t := time.NewTicker(m.iv)
	defer t.Stop()
	var last *Capacity
	var lastReason Reason
	kicked := false
	for {
		if _, err := m.Sample(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("meter: sample failed", "err", err)
		}
		now := time.Now()
		held := m.held.Held()
		m.mu.Lock()
		measured, policy := m.measured, m.policy
		m.mu.Unlock()
		spare, reason := policy.Spare(now, measured, held)
		m.mu.Lock()
		m.snap = Snapshot{Measured: measured, Held: held, Spare: spare, Reason: reason}
		m.mu.Unlock()

		if reason != lastReason {
			m.log.Info("meter: on offer", "spare", spare.String(), "reason", string(reason))
			lastReason = reason
		}
		if kicked || last == nil || changedBeyond(*last, spare, policy.Threshold) {
			m.log.Debug("meter: spare changed", "spare", spare.String())
			last = &spare
			if m.OnChange != nil {
				m.OnChange(spare)
			}
		}
		kicked = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
			kicked = true
		}
	}
}

// cpuTimes is cumulative CPU time in seconds, all cores together.
type cpuTimes struct{ idle, total float64 }

// idleFraction is the idle share of CPU time between a and b, in [0, 1];
// -1 when no time passed (or the counters went backwards).
func idleFraction(a, b cpuTimes) float64 {
	dt := b.total - a.total
	if dt <= 0 {
		return -1
	}
	return math.Min(1, math.Max(0, (b.idle-a.idle)/dt))
}

func clampInt(v uint64) int64 {
	if v >= Unlimited {
		return Unlimited - 1
	}
	return int64(v)
}

// source is where measurements come from; tests substitute a fake.
type source interface {
	cores(ctx context.Context) (int, error)
	cpuTimes(ctx context.Context) (cpuTimes, error)
	memory(ctx context.Context) (avail, total uint64, err error)
	disk(ctx context.Context, path string) (free, total uint64, err error)
}

// gopsutilSource reads /proc and statfs through gopsutil.
type gopsutilSource struct{}

func (gopsutilSource) cores(ctx context.Context) (int, error) {
	return cpu.CountsWithContext(ctx, true)
}

func (gopsutilSource) cpuTimes(ctx context.Context) (cpuTimes, error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return cpuTimes{}, err
	}
	if len(ts) == 0 {
		return cpuTimes{}, errors.New("no cpu times")
	}
	t := ts[0]
	// Guest time is already counted in user time on Linux.
	total := t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return cpuTimes{idle: t.Idle + t.Iowait, total: total}, nil
}

func (gopsutilSource) memory(ctx context.Context) (uint64, uint64, error) {
	v, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return 0, 0, err
	}
	return v.Available, v.Total, nil
}

// disk measures the filesystem of path, or of its nearest existing parent
// when the data dir is not created yet.
func (gopsutilSource) disk(ctx context.Context, path string) (uint64, uint64, error) {
	p := filepath.Clean(path)
	for {
		u, err := disk.UsageWithContext(ctx, p)
		if err == nil {
			return u.Free, u.Total, nil
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, fs.ErrNotExist) || parent == p {
			return 0, 0, err
		}
		p = parent
	}
}
