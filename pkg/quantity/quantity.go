// Package quantity owns how blackbox reads and writes amounts: sizes in
// bytes, CPU in millicores, bandwidth in bits per second. Every flag, config
// key, offer and output goes through it, so "512M" means one thing
// everywhere.
//
// Sizes follow Kubernetes quantities: a plain number is bytes; K, M, G, T, P
// (or KB, MB, …) are powers of 1000; Ki, Mi, Gi, Ti, Pi (or KiB, MiB, …) are
// powers of 1024. Units are case-insensitive, so Docker's "512m" is
// 512,000,000 bytes here, not 512 MiB: write "512Mi" for that.
package quantity

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// errEmpty is why the parsers reject an empty string; Config treats an
// empty value as "not set" before parsing.
var errEmpty = errors.New("empty")

// sizeUnits maps a lower-cased size suffix to its multiplier in bytes. Binary
// suffixes (KiB, MiB, ...) are powers of 1024; decimal ones (K, KB, M, MB,
// ...) are powers of 1000, as in Kubernetes quantities.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
	"p": 1e15, "pb": 1e15, "pi": 1 << 50, "pib": 1 << 50,
}

// ParseSize parses a human size such as "2GiB", "512MiB", "1.5GiB", "100MB"
// or "1048576" (bytes) into bytes. Binary suffixes are powers of 1024, decimal
// suffixes powers of 1000; suffixes are case-insensitive and may be preceded
// by spaces. Negative numbers, exponents, unknown units and values that
// overflow int64 are rejected. Fractions round down to whole bytes.
func ParseSize(s string) (int64, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)", s, unit)
	}
	v, err := scale(num, mult, 1)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return v, nil
}

// FormatSize renders bytes with the largest binary unit that keeps at least
// one whole unit, with up to two decimals: 1610612736 → "1.5GiB",
// 512 → "512B". ParseSize(FormatSize(n)) equals n whenever n is a whole
// number of hundredths of that unit.
func FormatSize(n int64) string {
	if n < 0 {
		return "-" + FormatSize(-n)
	}
	units := []struct {
		name string
		v    int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.v {
			return trimFloat(float64(n)/float64(u.v)) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// ParseCPU parses a CPU amount into millicores: "500m" is 500, "2" is 2000,
// "1.5" is 1500. At most three decimals are allowed on whole cores.
func ParseCPU(s string) (int64, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("cpu %q: %w", s, err)
	}
	switch unit {
	case "m":
		if strings.Contains(num, ".") {
			return 0, fmt.Errorf("cpu %q: millicores must be whole", s)
		}
		v, err := scale(num, 1, 1)
		if err != nil {
			return 0, fmt.Errorf("cpu %q: %w", s, err)
		}
		return v, nil
	case "":
		if i := strings.IndexByte(num, '.'); i >= 0 && len(num)-i-1 > 3 {
			return 0, fmt.Errorf("cpu %q: finer than a millicore", s)
		}
		v, err := scale(num, 1000, 1)
		if err != nil {
			return 0, fmt.Errorf("cpu %q: %w", s, err)
		}
		return v, nil
	default:
		return 0, fmt.Errorf("cpu %q: unknown unit %q (use cores like 1.5 or millicores like 500m)", s, unit)
	}
}

// FormatCPU renders millicores as cores: 2000 → "2", 1500 → "1.5", 250 → "0.25".
func FormatCPU(milli int64) string {
	return trimFloat3(float64(milli) / 1000)
}

// bandwidthPrefixes maps a lower-cased SI prefix to its multiplier.
var bandwidthPrefixes = map[string]int64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}

// ParseBandwidth parses a rate in bits per second: "100Mbit", "100Mbps",
// "1Gbit/s", "500kbit" or a plain number of bits/s. Prefixes are decimal.
// Byte rates ("MB/s") are rejected rather than guessed at.
func ParseBandwidth(s string) (int64, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	if strings.Contains(unit, "B") {
		return 0, fmt.Errorf("bandwidth %q: use bits per second, like 100Mbit", s)
	}
	u := strings.ToLower(unit)
	u = strings.TrimSuffix(u, "/s")
	switch {
	case strings.HasSuffix(u, "bps"):
		u = strings.TrimSuffix(u, "bps")
	case strings.HasSuffix(u, "bit"):
		u = strings.TrimSuffix(u, "bit")
	case u == "":
	default:
		return 0, fmt.Errorf("bandwidth %q: unknown unit %q (use bit, kbit, Mbit, Gbit)", s, unit)
	}
	mult, ok := bandwidthPrefixes[u]
	if !ok {
		return 0, fmt.Errorf("bandwidth %q: unknown unit %q (use bit, kbit, Mbit, Gbit)", s, unit)
	}
	v, err := scale(num, mult, 1)
	if err != nil {
		return 0, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	return v, nil
}

// FormatBandwidth renders bits/s with a decimal prefix: 100e6 → "100Mbit/s".
func FormatBandwidth(bps int64) string {
	units := []struct {
		name string
		v    int64
	}{{"Tbit/s", 1e12}, {"Gbit/s", 1e9}, {"Mbit/s", 1e6}, {"kbit/s", 1e3}}
	for _, u := range units {
		if bps >= u.v {
			return trimFloat(float64(bps)/float64(u.v)) + u.name
		}
	}
	return strconv.FormatInt(bps, 10) + "bit/s"
}

// splitQuantity splits "1.5 GiB" into "1.5" and "GiB". The number must be
// plain decimal digits with at most one dot: no sign, exponent, hex or Inf.
func splitQuantity(s string) (num, unit string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", errEmpty
	}
	i := 0
	dots := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		if s[i] == '.' {
			dots++
		}
		i++
	}
	num, unit = s[:i], strings.TrimSpace(s[i:])
	if s[0] == '-' {
		return "", "", errors.New("must not be negative")
	}
	if num == "" || num == "." || dots > 1 {
		return "", "", errors.New("not a number")
	}
	return num, unit, nil
}

// scale returns num × mult / div rounded down, exactly, failing on overflow.
func scale(num string, mult, div int64) (int64, error) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, errors.New("not a number")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	r.Quo(r, new(big.Rat).SetInt64(div))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() || q.Int64() == math.MaxInt64 {
		return 0, errors.New("too large")
	}
	return q.Int64(), nil
}

func trimFloat(f float64) string {
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func trimFloat3(f float64) string {
	s := strconv.FormatFloat(f, 'f', 3, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(s, "0")
	}
	return strings.TrimSuffix(s, ".")
}

// SizeHelp is the one sentence that --help texts and the sample config use
// to say what a size is.
const SizeHelp = "Sizes: a plain number is bytes; K, M, G, T are 10^3, 10^6, 10^9, 10^12 (KB, MB… too);\nKi, Mi, Gi, Ti are 2^10, 2^20, 2^30, 2^40 (KiB, MiB… too); case does not matter:\n512M is 512,000,000 bytes, 512Mi is 536,870,912."
