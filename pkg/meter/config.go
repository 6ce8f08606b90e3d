package meter

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// keyPrefix is where this package's config lives in the node's config file;
// Validate names keys with it so a message can be shown as is.
const keyPrefix = "meter."

// Config is the operator's selling policy and the meter's settings. Sizes
// are strings such as "2GiB" (see quantity.ParseSize: M = 10^6, Mi = 2^20), CPU amounts strings such as
// "1.5" or "500m" (see quantity.ParseCPU), rates strings such as "100Mbit" (see
// quantity.ParseBandwidth). An empty cap means no cap; "0" means sell none of it.
type Config struct {
	// Reserve is kept for the owner and never sold.
	Reserve Reserve `mapstructure:"reserve"`
	// Max caps what is sold, whatever is free.
	Max Caps `mapstructure:"max"`
	// Uplink is the declared upload bandwidth, e.g. "20Mbit". Real transfers
	// can only lower it (see Meter.ObserveThroughput).
	Uplink string `mapstructure:"uplink"`
	// Hours are the daily selling windows, e.g. "22:00-07:00" or
	// "08:00-12:00,13:00-18:00"; empty means all day.
	Hours string `mapstructure:"hours"`
	// Days are the selling days, e.g. "mon-fri" or "sat,sun"; empty means
	// every day. A window crossing midnight belongs to the day it starts.
	Days string `mapstructure:"days"`
	// Timezone is the IANA zone of Hours and Days, e.g. "Europe/Berlin";
	// empty means the machine's local zone.
	Timezone string `mapstructure:"timezone"`
	// CPUBasis is how spare CPU is counted: "idle" sells the CPU time that
	// was idle over the last sample (less the reserve); "allocatable" sells
	// all cores less the reserve, whatever the load, since CPU time is shared
	// fairly by the kernel (memory and disk are always measured).
	CPUBasis string `mapstructure:"cpu_basis"`
	// SampleInterval is how often the machine is measured.
	SampleInterval time.Duration `mapstructure:"sample_interval"`
	// ChangeThreshold is the relative change of any resource (0.1 = 10%)
	// that makes the meter report new spare capacity, so that offers are
	// republished; smaller changes are ignored.
	ChangeThreshold float64 `mapstructure:"change_threshold"`
	// Power sets a price floor from the electricity the CPU burns.
	Power Power `mapstructure:"power"`
	// Pricing is what the node asks. pkg/offer reads it; it lives here
	// because the power floor is checked against it.
	Pricing Pricing `mapstructure:"pricing"`
}

// Reserve is what the owner keeps for themselves.
type Reserve struct {
	// CPU in cores ("1.5") or millicores ("500m").
	CPU string `mapstructure:"cpu" json:"cpu"`
	// Memory, e.g. "1GiB".
	Memory string `mapstructure:"memory" json:"memory"`
	// Disk on the data dir's filesystem, e.g. "10GiB".
	Disk string `mapstructure:"disk" json:"disk"`
}

// Caps are the most the node sells of each resource; empty means no cap.
type Caps struct {
	// CPU in cores or millicores, like Reserve.CPU.
	CPU string `mapstructure:"cpu" json:"cpu"`
	// Memory, e.g. "8GiB".
	Memory string `mapstructure:"memory" json:"memory"`
	// Disk, e.g. "100GiB".
	Disk string `mapstructure:"disk" json:"disk"`
	// Bandwidth, e.g. "50Mbit"; also bounded by Uplink.
	Bandwidth string `mapstructure:"bandwidth" json:"bandwidth"`
}

// Power describes the electricity cost of a busy core. The node does not
// offer when Pricing.CoreHour < WattsPerCore/1000 × PriceKWh × Margin.
type Power struct {
	// WattsPerCore is the extra draw of one fully busy core.
	WattsPerCore float64 `mapstructure:"watts_per_core"`
	// PriceKWh is the electricity price in sats per kWh; 0 disables the floor.
	PriceKWh float64 `mapstructure:"price_kwh_sats"`
	// Margin multiplies the bare energy cost (1.5 = ask at least 50% over
	// it); 0 counts as 1.
	Margin float64 `mapstructure:"margin"`
}

// Pricing is what the node asks for its resources, in satoshis. Fractions
// are allowed (offers may carry millisatoshis).
type Pricing struct {
	// CoreHour is sats per core-hour of CPU.
	CoreHour float64 `mapstructure:"core_hour" json:"core_hour"`
	// MemoryGiBHour is sats per GiB-hour of RAM.
	MemoryGiBHour float64 `mapstructure:"memory_gib_hour" json:"memory_gib_hour"`
	// DiskGiBHour is sats per GiB-hour of disk.
	DiskGiBHour float64 `mapstructure:"disk_gib_hour" json:"disk_gib_hour"`
	// EgressGiB is sats per GiB (2^30 bytes) moved between the node and a
	// buyer, both ways: the job's stdout, stderr and out.tar it sends, and
	// the inputs and image (when really sent, not when cached) it
	// receives; billed when the job ends in whole sats rounded down (job
	// protocol 1.3.0; see pkg/contract/egress.go).
	EgressGiB float64 `mapstructure:"egress_gib" json:"egress_gib"`
	// StartFee is sats charged once per contract.
	StartFee float64 `mapstructure:"start_fee" json:"start_fee"`
}

// CPU bases (Config.CPUBasis).
const (
	CPUIdle        = "idle"
	CPUAllocatable = "allocatable"
)

// DefaultConfig returns the policy a node uses with no config at all: keep
// one core, 1GiB of RAM and 10GiB of disk for the owner, sell the rest at any
// hour, assume a 10Mbit/s uplink, measure every 5s, and ask roughly cloud
// spot prices (at about 100k USD per BTC: 20 sats ≈ 0.02 USD per core-hour).
// The power floor assumes 10 W per core at 300 sats per kWh, i.e. 3 sats per
// core-hour, well under the default price. The start fee, 200 sats per
// contract, is what makes a buyer's contracts on one payment channel pay for
// its on-chain close (171 vB: 342 sats at 2 sat/vB; docs/payout.md).
func DefaultConfig() Config {
	return Config{
		Reserve:         Reserve{CPU: "1", Memory: "1GiB", Disk: "10GiB"},
		Uplink:          "10Mbit",
		CPUBasis:        CPUIdle,
		SampleInterval:  5 * time.Second,
		ChangeThreshold: 0.1,
		Power:           Power{WattsPerCore: 10, PriceKWh: 300, Margin: 1},
		Pricing: Pricing{
			CoreHour:      20,
			MemoryGiBHour: 3,
			DiskGiBHour:   0.1,
			EgressGiB:     50,
			StartFee:      200,
		},
	}
}

// Validate checks every key and returns all problems, each naming its key,
// e.g. "meter.reserve.memory: must be a size like 2GiB".
func (c Config) Validate() error {
	_, err := c.policy(nil)
	return err
}

// Floor is the lowest price per core-hour, in sats, the power settings
// allow; 0 when no electricity price is set.
func (p Power) Floor() float64 {
	if p.PriceKWh <= 0 || p.WattsPerCore <= 0 {
		return 0
	}
	m := p.Margin
	if m <= 0 {
		m = 1
	}
	return p.WattsPerCore / 1000 * p.PriceKWh * m
}

// policy compiles c into a Policy, collecting every error. loc overrides
// the configured zone (tests use it); nil means c.Timezone.
func (c Config) policy(loc *time.Location) (Policy, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(keyPrefix+key+": "+format, args...))
	}
	// parsed parses v with parse, or returns def when v is empty.
	parsed := func(parse func(string) (int64, error), like string) func(key, v string, def int64) int64 {
		return func(key, v string, def int64) int64 {
			if v == "" {
				return def
			}
			n, err := parse(v)
			if err != nil {
				bad(key, "must be %s, not %q", like, v)
			}
			return n
		}
	}
	size := parsed(quantity.ParseSize, "a size like 2GiB or 512MiB")
	cpu := parsed(quantity.ParseCPU, "cores like 1.5 or millicores like 500m")
	rate := parsed(quantity.ParseBandwidth, "bits per second like 100Mbit")
	nonneg := func(key string, v float64) {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			bad(key, "must be a number ≥ 0, not %v", v)
		}
	}

	p := Policy{
		Reserve: Capacity{
			MilliCPU: cpu("reserve.cpu", c.Reserve.CPU, 0),
			Memory:   size("reserve.memory", c.Reserve.Memory, 0),
			Disk:     size("reserve.disk", c.Reserve.Disk, 0),
		},
		Caps: Capacity{
			MilliCPU:  cpu("max.cpu", c.Max.CPU, Unlimited),
			Memory:    size("max.memory", c.Max.Memory, Unlimited),
			Disk:      size("max.disk", c.Max.Disk, Unlimited),
			Bandwidth: rate("max.bandwidth", c.Max.Bandwidth, Unlimited),
		},
		Uplink:  rate("uplink", c.Uplink, 0),
		Pricing: c.Pricing,
		Power:   c.Power,
	}
	if loc == nil {
		var err error
		switch c.Timezone {
		case "", "Local", "local":
			loc = time.Local
		default:
			if loc, err = time.LoadLocation(c.Timezone); err != nil {
				bad("timezone", "unknown time zone %q (want an IANA name like Europe/Berlin)", c.Timezone)
				loc = time.UTC
			}
		}
	}
	if _, err := parseHours(c.Hours); err != nil {
		bad("hours", "must be ranges like 22:00-07:00 or 08:00-12:00,13:00-18:00: %v", err)
	}
	if c.Days != "" {
		if _, err := parseDays(c.Days); err != nil {
			bad("days", "must be days like mon-fri or sat,sun: %v", err)
		}
	}
	if sch, err := ParseSchedule(c.Hours, c.Days, loc); err == nil {
		p.Schedule = sch
	}
	if c.SampleInterval < 100*time.Millisecond || c.SampleInterval > time.Hour {
		bad("sample_interval", "must be a duration between 100ms and 1h, like 5s, not %v", c.SampleInterval)
	}
	if c.ChangeThreshold < 0 || c.ChangeThreshold >= 1 || math.IsNaN(c.ChangeThreshold) {
		bad("change_threshold", "must be a fraction from 0 up to 1 (0.1 = 10%%), not %v", c.ChangeThreshold)
	}
	p.Threshold = c.ChangeThreshold
	switch c.CPUBasis {
	case "", CPUIdle:
	case CPUAllocatable:
		p.CPUAllocatable = true
	default:
		bad("cpu_basis", "must be %q or %q, not %q", CPUIdle, CPUAllocatable, c.CPUBasis)
	}
	nonneg("power.watts_per_core", c.Power.WattsPerCore)
	nonneg("power.price_kwh_sats", c.Power.PriceKWh)
	nonneg("power.margin", c.Power.Margin)
	nonneg("pricing.core_hour", c.Pricing.CoreHour)
	nonneg("pricing.memory_gib_hour", c.Pricing.MemoryGiBHour)
	nonneg("pricing.disk_gib_hour", c.Pricing.DiskGiBHour)
	nonneg("pricing.egress_gib", c.Pricing.EgressGiB)
	nonneg("pricing.start_fee", c.Pricing.StartFee)
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}
