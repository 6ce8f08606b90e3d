package meter

import (
	"strings"
	"testing"
	"time"
)

const gib = 1 << 30

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
}

func TestValidateNamesKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"reserve memory", func(c *Config) { c.Reserve.Memory = "lots" }, "meter.reserve.memory: must be a size like 2GiB"},
		{"reserve negative", func(c *Config) { c.Reserve.Disk = "-1GiB" }, "meter.reserve.disk: must be a size"},
		{"reserve cpu", func(c *Config) { c.Reserve.CPU = "-2" }, "meter.reserve.cpu: must be cores"},
		{"max cpu", func(c *Config) { c.Max.CPU = "four" }, "meter.max.cpu: must be cores"},
		{"max memory", func(c *Config) { c.Max.Memory = "2 GB RAM" }, "meter.max.memory: must be a size"},
		{"max bandwidth", func(c *Config) { c.Max.Bandwidth = "10MB/s" }, "meter.max.bandwidth: must be bits per second"},
		{"uplink", func(c *Config) { c.Uplink = "fast" }, "meter.uplink: must be bits per second"},
		{"hours", func(c *Config) { c.Hours = "22:00-31:00" }, "meter.hours: must be ranges"},
		{"days", func(c *Config) { c.Days = "weekdays" }, "meter.days: must be days"},
		{"timezone", func(c *Config) { c.Timezone = "Mars/Olympus" }, "meter.timezone: unknown time zone"},
		{"interval", func(c *Config) { c.SampleInterval = 0 }, "meter.sample_interval: must be a duration"},
		{"threshold", func(c *Config) { c.ChangeThreshold = 1.5 }, "meter.change_threshold: must be a fraction"},
		{"watts", func(c *Config) { c.Power.WattsPerCore = -1 }, "meter.power.watts_per_core: must be a number"},
		{"price kwh", func(c *Config) { c.Power.PriceKWh = -3 }, "meter.power.price_kwh_sats: must be a number"},
		{"core hour", func(c *Config) { c.Pricing.CoreHour = -1 }, "meter.pricing.core_hour: must be a number"},
		{"start fee", func(c *Config) { c.Pricing.StartFee = -1 }, "meter.pricing.start_fee: must be a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := DefaultConfig()
	c.Reserve.Memory = "x"
	c.Max.Disk = "y"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "meter.reserve.memory") || !strings.Contains(err.Error(), "meter.max.disk") {
		t.Errorf("Validate() = %v, want both keys", err)
	}
}

func TestPowerFloor(t *testing.T) {
	tests := []struct {
		p    Power
		want float64
	}{
		{Power{WattsPerCore: 10, PriceKWh: 300, Margin: 1}, 3},
		{Power{WattsPerCore: 50, PriceKWh: 1000, Margin: 1.1}, 55},
		{Power{WattsPerCore: 10, PriceKWh: 300}, 3}, // margin 0 counts as 1
		{Power{WattsPerCore: 10}, 0},                // no price: no floor
		{Power{PriceKWh: 300, Margin: 2}, 0},        // no watts: no floor
	}
	for _, tt := range tests {
		if got := tt.p.Floor(); got < tt.want-1e-9 || got > tt.want+1e-9 {
			t.Errorf("%+v.Floor() = %v, want %v", tt.p, got, tt.want)
		}
	}
}

// machine is a measured 8-core, 32GiB, 500GiB, 100Mbit/s box, half idle.
func machine() Measured {
	return Measured{
		At:    at(time.UTC, wed, 12, 0),
		Total: Capacity{MilliCPU: 8000, Memory: 32 * gib, Disk: 500 * gib, Bandwidth: 100e6},
		Free:  Capacity{MilliCPU: 4000, Memory: 16 * gib, Disk: 200 * gib, Bandwidth: 100e6},
	}
}

func TestPolicySpare(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Reserve = Reserve{CPU: "1", Memory: "2GiB", Disk: "50GiB"}
		c.Uplink = "100Mbit"
		c.Timezone = "UTC"
		return c
	}
	wed12 := at(time.UTC, wed, 12, 0)
	tests := []struct {
		name       string
		cfg        func(*Config)
		now        time.Time
		m          func(*Measured)
		held       Capacity
		want       Capacity
		wantReason string
	}{
		{
			name:       "free minus reserve",
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
		{
			name:       "held is subtracted",
			now:        wed12,
			held:       Capacity{MilliCPU: 2000, Memory: 4 * gib, Disk: 10 * gib, Bandwidth: 30e6},
			want:       Capacity{MilliCPU: 1000, Memory: 10 * gib, Disk: 140 * gib, Bandwidth: 70e6},
			wantReason: "spare",
		},
		{
			name:       "held beyond free floors at zero",
			now:        wed12,
			held:       Capacity{MilliCPU: 9000},
			want:       Capacity{MilliCPU: 0, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare; no cpu left after contracts and reserve",
		},
		{
			name:       "reserve beyond free",
			cfg:        func(c *Config) { c.Reserve.Memory = "20GiB" },
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 0, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare; no memory left after reserve",
		},
		{
			name: "caps",
			cfg: func(c *Config) {
				c.Max = Caps{CPU: "2", Memory: "8GiB", Disk: "100GiB", Bandwidth: "50Mbit"}
			},
			now:        wed12,
			want:       Capacity{MilliCPU: 2000, Memory: 8 * gib, Disk: 100 * gib, Bandwidth: 50e6},
			wantReason: "spare; cpu capped by meter.max.cpu, memory capped by meter.max.memory, disk capped by meter.max.disk, bandwidth capped by meter.max.bandwidth",
		},
		{
			name:       "caps count what contracts hold",
			cfg:        func(c *Config) { c.Max.CPU = "2" },
			now:        wed12,
			held:       Capacity{MilliCPU: 1500},
			want:       Capacity{MilliCPU: 500, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare; cpu capped by meter.max.cpu",
		},
		{
			name:       "cap fully held",
			cfg:        func(c *Config) { c.Max.CPU = "2" },
			now:        wed12,
			held:       Capacity{MilliCPU: 2000},
			want:       Capacity{MilliCPU: 0, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare; no cpu: contracts hold all of meter.max.cpu",
		},
		{
			name:       "cap zero",
			cfg:        func(c *Config) { c.Max.Disk = "0" },
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Bandwidth: 100e6},
			wantReason: "spare; no disk: meter.max.disk is 0",
		},
		{
			name:       "cap above free does nothing",
			cfg:        func(c *Config) { c.Max.CPU = "64" },
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
		{
			name:       "no uplink declared",
			cfg:        func(c *Config) { c.Uplink = "" },
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib},
			wantReason: "spare; no bandwidth: meter.uplink not set",
		},
		{
			name:       "outside hours",
			cfg:        func(c *Config) { c.Hours = "22:00-07:00"; c.Days = "mon-fri" },
			now:        wed12,
			want:       Capacity{},
			wantReason: "outside available hours 22:00-07:00 mon-fri (UTC)",
		},
		{
			name:       "inside hours",
			cfg:        func(c *Config) { c.Hours = "22:00-07:00"; c.Days = "mon-fri" },
			now:        at(time.UTC, sat, 6, 0),
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
		{
			name: "price below power floor",
			cfg: func(c *Config) {
				c.Pricing.CoreHour = 40
				c.Power = Power{WattsPerCore: 50, PriceKWh: 1000, Margin: 1.1}
			},
			now:        wed12,
			want:       Capacity{},
			wantReason: "price 40 sat/core-h below power floor 55",
		},
		{
			name: "price at power floor",
			cfg: func(c *Config) {
				c.Pricing.CoreHour = 55
				c.Power = Power{WattsPerCore: 50, PriceKWh: 1000, Margin: 1.1}
			},
			now:        wed12,
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
		{
			name:       "hours win over floor",
			cfg:        func(c *Config) { c.Hours = "00:00-01:00"; c.Pricing.CoreHour = 0 },
			now:        wed12,
			want:       Capacity{},
			wantReason: "outside available hours 00:00-01:00 (UTC)",
		},
		{
			name:       "everything held",
			now:        wed12,
			held:       Capacity{MilliCPU: 8000, Memory: 32 * gib, Disk: 500 * gib, Bandwidth: 100e6},
			want:       Capacity{},
			wantReason: "nothing to spare: no cpu left after contracts and reserve, no memory left after contracts and reserve, no disk left after contracts and reserve, no bandwidth left after contracts and reserve",
		},
		{
			name:       "not measured",
			now:        wed12,
			m:          func(m *Measured) { *m = Measured{} },
			want:       Capacity{},
			wantReason: "not measured yet",
		},
		{
			name:       "allocatable cpu ignores load",
			cfg:        func(c *Config) { c.CPUBasis = CPUAllocatable },
			now:        wed12,
			held:       Capacity{MilliCPU: 2000},
			want:       Capacity{MilliCPU: 5000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
		{
			name:       "measured bandwidth above uplink is cut",
			now:        wed12,
			m:          func(m *Measured) { m.Free.Bandwidth = 1e9 },
			want:       Capacity{MilliCPU: 3000, Memory: 14 * gib, Disk: 150 * gib, Bandwidth: 100e6},
			wantReason: "spare",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			if tt.cfg != nil {
				tt.cfg(&c)
			}
			p, err := c.Policy()
			if err != nil {
				t.Fatal(err)
			}
			m := machine()
			if tt.m != nil {
				tt.m(&m)
			}
			got, reason := p.Spare(tt.now, m, tt.held)
			if got != tt.want {
				t.Errorf("Spare = %v, want %v", got, tt.want)
			}
			if string(reason) != tt.wantReason {
				t.Errorf("reason = %q, want %q", reason, tt.wantReason)
			}
		})
	}
}

func TestCapacityHelpers(t *testing.T) {
	a := Capacity{MilliCPU: 2000, Memory: 4 * gib, Disk: 10 * gib, Bandwidth: 10e6}
	b := Capacity{MilliCPU: 500, Memory: 8 * gib, Disk: 1 * gib, Bandwidth: 10e6}
	if got, want := a.Sub(b), (Capacity{MilliCPU: 1500, Memory: 0, Disk: 9 * gib}); got != want {
		t.Errorf("Sub = %v, want %v", got, want)
	}
	if got, want := a.Min(b), (Capacity{MilliCPU: 500, Memory: 4 * gib, Disk: 1 * gib, Bandwidth: 10e6}); got != want {
		t.Errorf("Min = %v, want %v", got, want)
	}
	if got, want := a.Add(b), (Capacity{MilliCPU: 2500, Memory: 12 * gib, Disk: 11 * gib, Bandwidth: 20e6}); got != want {
		t.Errorf("Add = %v, want %v", got, want)
	}
	if a.Fits(b) || !a.Fits(a.Min(b)) {
		t.Errorf("Fits wrong")
	}
	unl := Capacity{MilliCPU: Unlimited}
	if got := unl.Sub(a).MilliCPU; got != Unlimited {
		t.Errorf("Unlimited − x = %d", got)
	}
	if got := unl.Add(a).MilliCPU; got != Unlimited {
		t.Errorf("Unlimited + x = %d", got)
	}
	if s := a.String(); s != "cpu 2 mem 4GiB disk 10GiB bw 10Mbit/s" {
		t.Errorf("String = %q", s)
	}
}

func TestChangedBeyond(t *testing.T) {
	a := Capacity{MilliCPU: 1000, Memory: 10 * gib}
	tests := []struct {
		b    Capacity
		want bool
	}{
		{a, false},
		{Capacity{MilliCPU: 1050, Memory: 10 * gib}, false},
		{Capacity{MilliCPU: 1200, Memory: 10 * gib}, true},
		{Capacity{MilliCPU: 1000, Memory: 8 * gib}, true},
		{Capacity{MilliCPU: 1000, Memory: 10 * gib, Disk: 1}, true}, // zero → non-zero
		{Capacity{}, true},
	}
	for _, tt := range tests {
		if got := changedBeyond(a, tt.b, 0.1); got != tt.want {
			t.Errorf("changedBeyond(%v, %v) = %v, want %v", a, tt.b, got, tt.want)
		}
	}
}
