package contract

import (
	"errors"
	"fmt"
	"time"
)

// ServiceConfig is how this node runs services: the "contract.service"
// section of the config file. The seller uses the restart policy and the
// health check's pace; the buyer the renewal and drain. A zero field means
// its default (an engine built without the node's config).
type ServiceConfig struct {
	// RestartMin is the wait before the seller restarts a service's job
	// that exited; each restart doubles it, up to RestartMax. After the
	// job ran RestartReset, the wait is back to RestartMin.
	RestartMin   time.Duration `mapstructure:"restart_min"`
	RestartMax   time.Duration `mapstructure:"restart_max"`
	RestartReset time.Duration `mapstructure:"restart_reset"`
	// MaxRestarts is how often the seller restarts a service's job in one
	// contract; the next exit ends the contract (the buyer then starts
	// another, perhaps on another seller).
	MaxRestarts int `mapstructure:"max_restarts"`
	// HealthInterval is how often the seller runs a service's health
	// check (each bounded by HealthTimeout) and tells the buyer when the
	// result changes.
	HealthInterval time.Duration `mapstructure:"health_interval"`
	HealthTimeout  time.Duration `mapstructure:"health_timeout"`
	// RenewLead is how long before a service contract ends the buyer
	// starts the next one (at most a third of the contract).
	RenewLead time.Duration `mapstructure:"renew_lead"`
	// Drain is how long a renewed contract may finish the connections it
	// carries before it is cancelled (new ones go to its successor).
	Drain time.Duration `mapstructure:"drain"`
}

// Service defaults.
const (
	DefaultRestartMin    = time.Second
	DefaultRestartMax    = 30 * time.Second
	DefaultRestartReset  = time.Minute
	DefaultMaxRestarts   = 10
	DefaultHealthTimeout = 3 * time.Second
	DefaultRenewLead     = 2 * time.Minute
	DefaultDrain         = 10 * time.Second
)

// DefaultHealthInterval is the health check's default pace.
const DefaultHealthInterval = 2 * time.Second

// DefaultServiceConfig is the "contract.service" section's defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{RestartMin: DefaultRestartMin, RestartMax: DefaultRestartMax, RestartReset: DefaultRestartReset,
		MaxRestarts: DefaultMaxRestarts, HealthInterval: DefaultHealthInterval, HealthTimeout: DefaultHealthTimeout,
		RenewLead: DefaultRenewLead, Drain: DefaultDrain}
}

// Validate refuses values a service could not run with, naming the key.
func (c ServiceConfig) Validate() error {
	var errs []error
	bad := func(key string, v time.Duration, lo, hi time.Duration) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("contract.service.%s: must be in %s..%s, got %s", key, lo, hi, v))
		}
	}
	bad("restart_min", c.RestartMin, 100*time.Millisecond, 10*time.Minute)
	bad("restart_max", c.RestartMax, 100*time.Millisecond, time.Hour)
	bad("restart_reset", c.RestartReset, time.Second, 24*time.Hour)
	bad("health_interval", c.HealthInterval, 100*time.Millisecond, 10*time.Minute)
	bad("health_timeout", c.HealthTimeout, 100*time.Millisecond, time.Minute)
	bad("renew_lead", c.RenewLead, time.Second, time.Hour)
	bad("drain", c.Drain, 100*time.Millisecond, 10*time.Minute)
	if c.RestartMax < c.RestartMin {
		errs = append(errs, fmt.Errorf("contract.service.restart_max (%s) must not be below restart_min (%s)", c.RestartMax, c.RestartMin))
	}
	if c.MaxRestarts < 1 || c.MaxRestarts > 10000 {
		errs = append(errs, fmt.Errorf("contract.service.max_restarts: must be in 1..10000, got %d", c.MaxRestarts))
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields with the defaults.
func (c ServiceConfig) withDefaults() ServiceConfig {
	d := DefaultServiceConfig()
	d.HealthInterval = healthEvery // the tests' pace when none is set
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.RestartMin, d.RestartMin)
	set(&c.RestartMax, d.RestartMax)
	set(&c.RestartReset, d.RestartReset)
	set(&c.HealthInterval, d.HealthInterval)
	set(&c.HealthTimeout, d.HealthTimeout)
	set(&c.RenewLead, d.RenewLead)
	set(&c.Drain, d.Drain)
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = d.MaxRestarts
	}
	return c
}

// renewLead is how long before a service contract of length d its
// successor is started: a third of the contract, at most RenewLead.
func (c ServiceConfig) renewLead(d time.Duration) time.Duration {
	return min(d/3, c.withDefaults().RenewLead)
}
