package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// TestRestoreRefuses: `blackbox restore` without a backup, with a damaged
// one, or over a database that is there changes nothing and says why.
func TestRestoreRefuses(t *testing.T) {
	run := func(data string, args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"--data-dir", data, "--log-level", "error"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	dir := t.TempDir()
	db := filepath.Join(dir, node.DBFile)
	if code, out := run(dir, "restore"); code == 0 || !strings.Contains(out, "channel backup") {
		t.Fatalf("restore without a backup: exit %d %q", code, out)
	}
	if err := os.WriteFile(filepath.Join(dir, node.BackupFile), []byte("blackbox-channel-backup 1 00\n{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run(dir, "restore"); code == 0 || !strings.Contains(out, "checksum") {
		t.Fatalf("restore from a damaged backup: exit %d %q", code, out)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("a refused restore created a database")
	}
	// A valid backup restores into a fresh database, once.
	raw, err := payment.EncodeChannelBackup(&payment.ChannelBackup{Counters: map[string]uint32{"buyer_key": 4}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, node.BackupFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run(dir, "restore"); code != 0 || !strings.Contains(out, "restored 0 channels") {
		t.Fatalf("restore: exit %d %q", code, out)
	}
	if code, out := run(dir, "restore"); code == 0 || !strings.Contains(out, "move it aside") {
		t.Fatalf("restore over a database: exit %d %q", code, out)
	}
	// The restored database holds the counters: no key is handed out twice.
	d, err := store.Open(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if next, err := store.NewPaymentStore(d).NextIndex("buyer_key"); err != nil || next != 4 {
		t.Fatalf("restored buyer_key counter: %d, %v; want 4", next, err)
	}
}
