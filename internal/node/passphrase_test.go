package node

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The passphrase comes from payment.passphrase_file, else the systemd
// credential, else the environment, and says where it came from.
func TestPassphraseOf(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv(PassphraseEnv, "from-env")
	cfg := payment.RegtestConfig()
	if p := PassphraseOf(cfg); string(p.Value) != "from-env" || p.Source != PassphraseEnv {
		t.Errorf("no credential file: %+v", p)
	}
	os.WriteFile(filepath.Join(creds, CredentialName), []byte("from-credential\n"), 0o600)
	if p := PassphraseOf(cfg); string(p.Value) != "from-credential" || !strings.Contains(p.Source, "systemd credential") {
		t.Errorf("credential: %+v", p)
	}
	file := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(file, []byte("from-file\r\n"), 0o600)
	cfg.PassphraseFile = file
	if p := PassphraseOf(cfg); string(p.Value) != "from-file" || !strings.Contains(p.Source, "passphrase_file") {
		t.Errorf("file: %+v", p)
	}
	os.WriteFile(file, []byte("\n"), 0o600)
	if p := PassphraseOf(cfg); p.Err == nil {
		t.Error("an empty passphrase file is an error")
	}
	cfg.PassphraseFile = ""
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	t.Setenv(PassphraseEnv, "")
	if p := PassphraseOf(cfg); p.Err == nil || !strings.Contains(p.Err.Error(), "no wallet passphrase") {
		t.Errorf("none: %+v", p)
	}
}

// payment.required: auto follows systemd, true and false are what they say.
func TestPaymentsRequired(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("INVOCATION_ID", "")
	t.Setenv("SYSTEMD_EXEC_PID", strconv.Itoa(os.Getpid()))
	if !UnderSystemd() {
		t.Error("SYSTEMD_EXEC_PID is this process: under systemd")
	}
	// Inherited from a service's shell: not this process.
	t.Setenv("SYSTEMD_EXEC_PID", strconv.Itoa(os.Getppid()))
	t.Setenv("INVOCATION_ID", "0123")
	if UnderSystemd() {
		t.Error("SYSTEMD_EXEC_PID of another process: not under systemd")
	}
	cfg := payment.RegtestConfig()
	for _, tc := range []struct {
		v       string
		service bool
		want    bool
	}{{"auto", true, true}, {"auto", false, false}, {"true", false, true}, {"false", true, false}, {"1", false, true}} {
		cfg.Required = tc.v
		if err := cfg.Validate(); err != nil {
			t.Errorf("%q: %v", tc.v, err)
		}
		if got := cfg.IsRequired(tc.service); got != tc.want {
			t.Errorf("required %q, service %v: %v", tc.v, tc.service, got)
		}
	}
	cfg.Required = "sometimes"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("bad value: %v", err)
	}
}
