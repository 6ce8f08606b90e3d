package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/meter"
)

// Policy is the operator's selling policy that can change while the node
// runs (the dashboard's form, PUT /v1/config/policy): prices, the reserve,
// the caps and the selling hours. The keys are those of the config file's
// meter section.
type Policy struct {
	Pricing  meter.Pricing `json:"pricing"`
	Reserve  meter.Reserve `json:"reserve"`
	Max      meter.Caps    `json:"max"`
	Hours    string        `json:"hours"`
	Days     string        `json:"days"`
	Timezone string        `json:"timezone"`
}

// PolicyOf is the editable part of a meter config.
func PolicyOf(c meter.Config) Policy {
	return Policy{Pricing: c.Pricing, Reserve: c.Reserve, Max: c.Max, Hours: c.Hours, Days: c.Days, Timezone: c.Timezone}
}

// Apply returns c with p's keys in place of its own; the other keys (uplink,
// sample interval, power) are kept.
func (p Policy) Apply(c meter.Config) meter.Config {
	c.Pricing, c.Reserve, c.Max = p.Pricing, p.Reserve, p.Max
	c.Hours, c.Days, c.Timezone = p.Hours, p.Days, p.Timezone
	return c
}

// PolicyKeys are the config file keys a Policy sets, with their values.
func (p Policy) PolicyKeys() map[string]any {
	return map[string]any{
		"meter.pricing.core_hour":       p.Pricing.CoreHour,
		"meter.pricing.memory_gib_hour": p.Pricing.MemoryGiBHour,
		"meter.pricing.disk_gib_hour":   p.Pricing.DiskGiBHour,
		"meter.pricing.egress_gib":      p.Pricing.EgressGiB,
		"meter.pricing.start_fee":       p.Pricing.StartFee,
		"meter.reserve.cpu":             p.Reserve.CPU,
		"meter.reserve.memory":          p.Reserve.Memory,
		"meter.reserve.disk":            p.Reserve.Disk,
		"meter.max.cpu":                 p.Max.CPU,
		"meter.max.memory":              p.Max.Memory,
		"meter.max.disk":                p.Max.Disk,
		"meter.max.bandwidth":           p.Max.Bandwidth,
		"meter.hours":                   p.Hours,
		"meter.days":                    p.Days,
		"meter.timezone":                p.Timezone,
	}
}

// ConfigView is the running daemon's effective configuration.
type ConfigView struct {
	DataDir string `json:"data_dir"`
	// ConfigFile is the file the daemon read at start and writes policy
	// changes to.
	ConfigFile string `json:"config_file"`
	// Settings is every key with its effective value, nested as in the
	// config file; secrets (the RPC password) are shown as "(set)".
	Settings map[string]any `json:"settings"`
	// Policy is the live selling policy (also inside Settings).
	Policy Policy `json:"policy"`
	// Overridden names policy keys that an environment variable sets: a
	// change is applied now and written to the file, but at the next start
	// the variable wins again.
	Overridden []string `json:"overridden,omitempty"`
}

// ConfigBackend is what a daemon serves for `config show` and live policy
// changes. SetPolicy validates p (an error wrapping ErrBadRequest names each
// wrong key, one per line, as "meter.KEY: what is wrong"), applies it to
// the running node, persists it to the config file and returns the
// configuration after.
type ConfigBackend interface {
	Config(ctx context.Context) (ConfigView, error)
	SetPolicy(ctx context.Context, p Policy) (ConfigView, error)
}

// configRoutes serves GET /v1/config and PUT /v1/config/policy when the
// backend implements ConfigBackend.
func configRoutes(mux *http.ServeMux, b Backend, log *slog.Logger) {
	cb, ok := b.(ConfigBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		v, err := cb.Config(r.Context())
		reply(w, log, v, err)
	})
	mux.HandleFunc("PUT /v1/config/policy", func(w http.ResponseWriter, r *http.Request) {
		var p Policy
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: policy: %v", ErrBadRequest, err))
			return
		}
		v, err := cb.SetPolicy(r.Context(), p)
		reply(w, log, v, err)
	})
}

// FieldErrors splits a validation error into its keys' messages: each line
// "meter.pricing.core_hour: must be …" becomes an entry; lines without a
// key are kept under "".
func FieldErrors(err error) map[string]string {
	out := map[string]string{}
	if err == nil {
		return out
	}
	msg := strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": ")
	for _, line := range strings.Split(msg, "\n") {
		key, text, ok := strings.Cut(line, ": ")
		if !ok || strings.ContainsAny(key, " \t") {
			key, text = "", line
		}
		if out[key] != "" {
			text = out[key] + "; " + text
		}
		out[key] = text
	}
	return out
}

// Config asks the running daemon for its effective configuration.
func (c *Client) Config(ctx context.Context) (ConfigView, error) {
	var v ConfigView
	return v, c.do(ctx, http.MethodGet, "/v1/config", nil, &v)
}

// SetPolicy changes the running daemon's selling policy.
func (c *Client) SetPolicy(ctx context.Context, p Policy) (ConfigView, error) {
	var v ConfigView
	return v, c.do(ctx, http.MethodPut, "/v1/config/policy", p, &v)
}
