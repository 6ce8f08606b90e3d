package reputation

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		key string
		mut func(*Config)
	}{
		{"", func(*Config) {}},
		{"threshold", func(c *Config) { c.Threshold = 1.5 }},
		{"exploration", func(c *Config) { c.Exploration = -0.1 }},
		{"prior_good", func(c *Config) { c.PriorGood = 0 }},
		{"half_life", func(c *Config) { c.HalfLife = time.Second }},
		{"max_hops", func(c *Config) { c.MaxHops = 0 }},
		{"max_attestation_bytes", func(c *Config) { c.MaxAttestationBytes = 10 }},
		{"rate_per_minute", func(c *Config) { c.RatePerMinute = 0 }},
		{"spot_check_floor", func(c *Config) { c.SpotCheckFloor = 2 }},
		{"spot_check_all_below", func(c *Config) { c.SpotCheckAllBelow = -1 }},
		{"attestation_ttl", func(c *Config) { c.AttestationTTL = time.Minute }},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		tc.mut(&c)
		err := c.Validate()
		if tc.key == "" {
			if err != nil {
				t.Errorf("defaults invalid: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.key+" = ") {
			t.Errorf("%s: err %v", tc.key, err)
		}
	}
}
