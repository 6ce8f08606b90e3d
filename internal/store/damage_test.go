package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// filled makes a database with some records, closed, and returns its path.
func filled(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blackbox.db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		v := bytes.Repeat([]byte{byte(i)}, 300+i*20)
		if err := db.Update(func(tx *Tx) error { return tx.Put("contracts", fmt.Sprintf("c/%03d", i), v) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenRefusesDamage (issue 9 bug 13): a database that is garbage,
// truncated, bit-flipped, emptied or deleted after it was created is
// refused with ErrDamaged and a message saying what to do; Open neither
// panics nor writes anything (the damaged file stays as it was, and a lost
// one is not re-created).
func TestOpenRefusesDamage(t *testing.T) {
	garbage := make([]byte, 64<<10)
	rand.Read(garbage)
	cases := map[string]func(t *testing.T, path string){
		"garbage": func(t *testing.T, path string) { os.WriteFile(path, garbage, 0o600) },
		"truncated": func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)/3], 0o600)
		},
		"truncated to one page": func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:4096], 0o600)
		},
		"meta pages zeroed": func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			clear(b[:8192])
			os.WriteFile(path, b, 0o600)
		},
		"data pages scribbled": func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			for i := 16384; i < len(b); i += 4096 {
				copy(b[i:], garbage[:64])
			}
			os.WriteFile(path, b, 0o600)
		},
		"emptied": func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) },
		"deleted": func(t *testing.T, path string) { os.Remove(path) },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path := filled(t)
			damage(t, path)
			before, _ := os.ReadFile(path)
			_, statErr := os.Stat(path)
			db, err := Open(path, time.Second)
			if err == nil {
				db.Close()
				t.Fatal("opened a damaged database")
			}
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "blackbox restore") {
				t.Fatalf("open: %v; want ErrDamaged saying what to do", err)
			}
			t.Logf("refused: %v", strings.SplitN(err.Error(), "\n", 2)[0])
			after, err := os.ReadFile(path)
			if _, e := os.Stat(path); (e == nil) != (statErr == nil) || !bytes.Equal(before, after) {
				t.Fatalf("the refused open changed the file (%v)", err)
			}
		})
	}
}

// TestOpenFresh: a database that never existed is created (with its
// marker); a lost one is re-created only by OpenFresh, which refuses to
// replace one that exists.
func TestOpenFresh(t *testing.T) {
	path := filled(t)
	if _, err := os.Stat(path + MarkerSuffix); err != nil {
		t.Fatalf("no marker after create: %v", err)
	}
	if _, err := OpenFresh(path, time.Second); err == nil || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("OpenFresh over a database: %v", err)
	}
	// A database from before markers gets one when opened.
	os.Remove(path + MarkerSuffix)
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(path + MarkerSuffix); err != nil {
		t.Fatalf("no marker after opening an old database: %v", err)
	}
	os.Remove(path)
	if _, err := Open(path, time.Second); !errors.Is(err, ErrDamaged) {
		t.Fatalf("open after loss: %v", err)
	}
	db, err = OpenFresh(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.Version(); v != SchemaVersion() {
		t.Fatalf("fresh database at version %d", v)
	}
}
