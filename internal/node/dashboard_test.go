package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
