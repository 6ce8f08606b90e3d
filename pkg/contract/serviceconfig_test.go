package contract

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

func TestServiceConfigValidate(t *testing.T) {
	if err := DefaultServiceConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("contract defaults: %v", err)
	}
	for key, mod := range map[string]func(*ServiceConfig){
		"restart_min":     func(c *ServiceConfig) { c.RestartMin = 0 },
		"restart_max":     func(c *ServiceConfig) { c.RestartMax = c.RestartMin / 2 },
		"restart_reset":   func(c *ServiceConfig) { c.RestartReset = -time.Second },
		"max_restarts":    func(c *ServiceConfig) { c.MaxRestarts = 0 },
		"health_interval": func(c *ServiceConfig) { c.HealthInterval = time.Millisecond },
		"health_timeout":  func(c *ServiceConfig) { c.HealthTimeout = time.Hour },
		"renew_lead":      func(c *ServiceConfig) { c.RenewLead = 2 * time.Hour },
		"drain":           func(c *ServiceConfig) { c.Drain = 0 },
	} {
		c := DefaultServiceConfig()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "contract.service."+key) {
			t.Errorf("%s: %v, want an error naming contract.service.%s", key, err, key)
		}
		cc := DefaultConfig()
		cc.Service = c
		if cc.Validate() == nil {
			t.Errorf("%s: the contract section accepts it", key)
		}
	}
	var sc SellerConfig
	var bc BuyerConfig
	cfg := DefaultConfig()
	cfg.Service.Drain = 3 * time.Second
	cfg.ApplySeller(&sc)
	cfg.ApplyBuyer(&bc)
	if sc.Service != cfg.Service || bc.Service != cfg.Service {
		t.Fatalf("not applied: seller %+v, buyer %+v", sc.Service, bc.Service)
	}
	// The renewal lead: a third of the contract, at most renew_lead.
	for _, c := range []struct {
		lead, term, want time.Duration
	}{
		{0, time.Hour, DefaultRenewLead},
		{0, 6 * time.Second, 2 * time.Second},
		{10 * time.Minute, time.Hour, 10 * time.Minute},
		{time.Second, 8 * time.Second, time.Second},
	} {
		if got := (ServiceConfig{RenewLead: c.lead}).renewLead(c.term); got != c.want {
			t.Errorf("renew_lead %s, contract %s: %s, want %s", c.lead, c.term, got, c.want)
		}
	}
}

// TestServiceMaxRestartsConfig: with max_restarts 1 the seller restarts a
// crashing service once, then ends its contract, and the buyer's next
// contract serves (the default policy keeps the restarts within one
// contract: TestServiceRestarts).
func TestServiceMaxRestartsConfig(t *testing.T) {
	m := newMarket(t)
	run := newSvcRunner([]byte("up"))
	run.crashes.Store(3)
	pay := &fakePay{}
	m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) {
		c.Runner = run
		c.Service = ServiceConfig{MaxRestarts: 1, RestartMin: 10 * time.Millisecond}
	}, calmSeller)
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	id, err := b.Submit(context.Background(), m.serviceRequest(1000, 1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy on a second contract", func() bool {
		j, _ := b.Job(id)
		return j.Service != nil && j.Service.Healthy() == 1 && j.Service.Contracts >= 2
	})
	j, _ := b.Job(id)
	for _, r := range j.Service.Running {
		if r.Health.Restarts > 1 {
			t.Fatalf("a contract restarted its job %d times, max_restarts is 1", r.Health.Restarts)
		}
	}
	b.Cancel(id)
	waitJob(t, b, id)
}
