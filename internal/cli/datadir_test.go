package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CLI finds the system service's data dir without --data-dir when the
// user has none of their own; serve never takes it over.
func TestPickDataDir(t *testing.T) {
	tmp := t.TempDir()
	user := filepath.Join(tmp, "home", ".local", "share", "blackbox")
	service := filepath.Join(tmp, "var", "lib", "blackbox")
	check := func(what, env string, serve bool, want string) {
		t.Helper()
		if got := pickDataDir(env, user, service, serve); got != want {
			t.Errorf("%s: got %s, want %s", what, got, want)
		}
	}
	check("nothing exists", "", false, user)
	if err := os.MkdirAll(service, 0o700); err != nil {
		t.Fatal(err)
	}
	check("only the service's", "", false, service)
	check("serve with only the service's", "", true, user)
	check("BLACKBOX_DATA_DIR first", "/elsewhere", false, "/elsewhere")
	if err := os.MkdirAll(user, 0o700); err != nil {
		t.Fatal(err)
	}
	check("the user's own first", "", false, user)
}

// --data-dir's help says the order.
func TestDataDirHelp(t *testing.T) {
	code, out, _ := run(t, "status", "--help")
	if code != 0 || !strings.Contains(out, "BLACKBOX_DATA_DIR") || !strings.Contains(out, ServiceDataDir) {
		t.Errorf("status --help: %d\n%s", code, out)
	}
}
