package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/configs"
	"github.com/blackbox-market/blackbox/internal/api"
	"go.yaml.in/yaml/v3"
)

// TestWriteKeysKeepsTheFile writes a policy into the documented sample
// config: the policy's keys change, every other key and the comments stay.
func TestWriteKeysKeepsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blackbox.yaml")
	if err := os.WriteFile(path, configs.Sample, 0o640); err != nil {
		t.Fatal(err)
	}
	p := api.PolicyOf(DefaultConfig().Meter)
	p.Pricing.CoreHour = 42.5
	p.Hours = "22:00-07:00"
	if err := writeKeys(path, p.PolicyKeys()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	m := got["meter"].(map[string]any)
	if m["pricing"].(map[string]any)["core_hour"] != 42.5 || m["hours"] != "22:00-07:00" || m["uplink"] != "10Mbit" {
		t.Fatalf("meter after write: %v", m)
	}
	if got["log_level"] != "info" || got["conn_high"] != 256 {
		t.Fatalf("other keys lost: %v", got)
	}
	for _, c := range []string{"# What the node asks, in satoshis", "# Log level: debug, info, warn or error."} {
		if !strings.Contains(string(b), c) {
			t.Errorf("comment %q lost", c)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's 0640 kept", st.Mode())
	}

	// A missing file is created with just the policy.
	fresh := filepath.Join(t.TempDir(), "new.yaml")
	if err := writeKeys(fresh, p.PolicyKeys()); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(fresh)
	if !strings.Contains(string(b), "core_hour: 42.5") {
		t.Fatalf("new file:\n%s", b)
	}
}

func TestSettingsHideSecrets(t *testing.T) {
	c := DefaultConfig()
	c.Payment.RPCPass = "hunter2"
	s := c.Settings()
	if s["payment"].(map[string]any)["rpc_pass"] != "(set)" || s["meter"].(map[string]any)["sample_interval"] != "5s" {
		t.Fatalf("settings: %v", s["payment"])
	}
}

// TestPolicyChangesTheRunningNode changes the policy of a running node
// through its local API (the dashboard calls the same method): a bad one is
// refused with every wrong key named and changes nothing; a good one is in
// the very next offer, in the config file and in the node's Config.
func TestPolicyChangesTheRunningNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node: not in -short")
	}
	cfg := testConfig(t)
	cfg.ConfigFile = filepath.Join(t.TempDir(), "custom.yaml")
	if err := os.WriteFile(cfg.ConfigFile, []byte("# mine\nregion: eu\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, cfg)
	defer n.Stop()
	ctx := context.Background()
	c := api.NewClient(cfg.DataDir)
	var before api.Offer
	var err error
	waitFor(t, 10*time.Second, "the offer", func() bool { before, err = c.Offer(ctx); return err == nil })

	bad := api.PolicyOf(cfg.Meter)
	bad.Pricing.CoreHour = -1
	bad.Hours = "25:00-26:00"
	_, err = c.SetPolicy(ctx, bad)
	fields := api.FieldErrors(err)
	if !errors.Is(err, api.ErrBadRequest) || fields["meter.pricing.core_hour"] == "" || fields["meter.hours"] == "" {
		t.Fatalf("bad policy: %v (fields %v)", err, fields)
	}
	if b, _ := os.ReadFile(cfg.ConfigFile); string(b) != "# mine\nregion: eu\n" {
		t.Fatalf("a refused policy touched the file:\n%s", b)
	}

	good := api.PolicyOf(cfg.Meter)
	good.Pricing.CoreHour = 77.5
	good.Days = "mon-sun"
	v, err := c.SetPolicy(ctx, good)
	if err != nil || v.Policy.Pricing.CoreHour != 77.5 || v.ConfigFile != cfg.ConfigFile {
		t.Fatalf("good policy: %+v %v", v.Policy, err)
	}
	o, err := c.Offer(ctx)
	if err != nil || o.Prices.CoreHour != 77500 || o.Seq <= before.Seq {
		t.Fatalf("offer right after the change: %d msat/core-h seq %d (before %d): %v", o.Prices.CoreHour, o.Seq, before.Seq, err)
	}
	got, err := c.Config(ctx)
	if err != nil || got.Settings["meter"].(map[string]any)["days"] != "mon-sun" {
		t.Fatalf("config after: %v %v", got.Settings["meter"], err)
	}
	b, _ := os.ReadFile(cfg.ConfigFile)
	if !strings.Contains(string(b), "# mine") || !strings.Contains(string(b), "region: eu") || !strings.Contains(string(b), "core_hour: 77.5") {
		t.Fatalf("config file after:\n%s", b)
	}
}
