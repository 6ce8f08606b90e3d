package meter

import (
	"fmt"
	"math"

	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// Unlimited marks a capacity dimension with no limit, used for caps the
// operator left unset. Arithmetic on it saturates instead of overflowing.
const Unlimited = math.MaxInt64

// Capacity is an amount of each resource a node can sell. Every field is
// non-negative in values this package returns.
type Capacity struct {
	// MilliCPU is CPU in thousandths of a core.
	MilliCPU int64 `json:"cpu_millis"`
	// Memory is RAM in bytes.
	Memory int64 `json:"memory_bytes"`
	// Disk is scratch space in bytes.
	Disk int64 `json:"disk_bytes"`
	// Bandwidth is uplink in bits per second.
	Bandwidth int64 `json:"bandwidth_bps"`
}

// Sub returns c − o per dimension, floored at zero. An Unlimited dimension
// of c stays Unlimited.
func (c Capacity) Sub(o Capacity) Capacity {
	return c.zip(o, func(a, b int64) int64 {
		switch {
		case a == Unlimited:
			return Unlimited
		case b >= a:
			return 0
		case b < 0:
			return a
		}
		return a - b
	})
}

// Add returns c + o per dimension, saturating at Unlimited.
func (c Capacity) Add(o Capacity) Capacity {
	return c.zip(o, func(a, b int64) int64 {
		if a > Unlimited-b {
			return Unlimited
		}
		return a + b
	})
}

// Min returns the smaller of c and o in each dimension.
func (c Capacity) Min(o Capacity) Capacity {
	return c.zip(o, func(a, b int64) int64 { return min(a, b) })
}

// Fits reports whether r fits within c in every dimension.
func (c Capacity) Fits(r Capacity) bool {
	return r.MilliCPU <= c.MilliCPU && r.Memory <= c.Memory &&
		r.Disk <= c.Disk && r.Bandwidth <= c.Bandwidth
}

// IsZero reports whether every dimension is zero.
func (c Capacity) IsZero() bool { return c == Capacity{} }

// String renders c for people: "cpu 1.5 mem 2GiB disk 40GiB bw 100Mbit/s".
func (c Capacity) String() string {
	f := func(v int64, format func(int64) string) string {
		if v == Unlimited {
			return "unlimited"
		}
		return format(v)
	}
	return fmt.Sprintf("cpu %s mem %s disk %s bw %s",
		f(c.MilliCPU, quantity.FormatCPU), f(c.Memory, quantity.FormatSize),
		f(c.Disk, quantity.FormatSize), f(c.Bandwidth, quantity.FormatBandwidth))
}

// changedBeyond reports whether next differs from prev by more than frac
// (a fraction of the larger value) in any dimension, or became zero or
// non-zero in any dimension.
func changedBeyond(prev, next Capacity, frac float64) bool {
	a := [4]int64{prev.MilliCPU, prev.Memory, prev.Disk, prev.Bandwidth}
	b := [4]int64{next.MilliCPU, next.Memory, next.Disk, next.Bandwidth}
	for i := range a {
		if (a[i] == 0) != (b[i] == 0) {
			return true
		}
		hi := float64(max(a[i], b[i]))
		if d := math.Abs(float64(a[i]) - float64(b[i])); d > frac*hi {
			return true
		}
	}
	return false
}

func (c Capacity) zip(o Capacity, f func(a, b int64) int64) Capacity {
	return Capacity{
		MilliCPU:  f(c.MilliCPU, o.MilliCPU),
		Memory:    f(c.Memory, o.Memory),
		Disk:      f(c.Disk, o.Disk),
		Bandwidth: f(c.Bandwidth, o.Bandwidth),
	}
}
