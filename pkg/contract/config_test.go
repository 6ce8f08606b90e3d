package contract

import (
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mut  func(*Config)
	}{
		{"negative grace", func(c *Config) { c.PayGrace = -time.Second }},
		{"fund timeout beyond a record's life", func(c *Config) { c.FundTimeout = time.Hour }},
		{"bad size", func(c *Config) { c.MaxImage = "lots" }},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		tc.mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	var sc SellerConfig
	DefaultConfig().ApplySeller(&sc)
	if sc.MaxImageBytes != 2<<30 || sc.FundTimeout != 2*time.Minute || sc.Timeouts.Settle != 10*time.Minute {
		t.Fatalf("seller config %+v", sc)
	}
	var bc BuyerConfig
	DefaultConfig().ApplyBuyer(&bc)
	if bc.MaxAttempts != 3 || bc.MaxOutputBytes != 256<<20 {
		t.Fatalf("buyer config %+v", bc)
	}
}
