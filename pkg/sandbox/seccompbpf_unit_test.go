package sandbox

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newBPFCache is a cache over a temporary dir, its log in buf, and a fake
// crun binary.
func newBPFCache(t *testing.T, buf *bytes.Buffer) (*bpfCache, string) {
	t.Helper()
	dir := t.TempDir()
	crun := filepath.Join(dir, "crun")
	if err := os.WriteFile(crun, []byte("crun 1.8.1"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &bpfCache{dir: filepath.Join(dir, "seccomp"), log: slog.New(slog.NewTextHandler(buf, nil))}, crun
}

// A kept program is loaded by the next cache for the same crun binary;
// a corrupt, truncated, renamed or other crun's file is removed with a
// log line and never used.
func TestBPFCacheOnDisk(t *testing.T) {
	prog := bytes.Repeat([]byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, 40)
	profile := strings.Repeat("ab", 32)
	for name, spoil := range map[string]func(t *testing.T, file string, k bpfKey){
		"good": func(*testing.T, string, bpfKey) {},
		"flipped byte": func(t *testing.T, file string, _ bpfKey) {
			b, _ := os.ReadFile(file)
			b[len(b)-3] ^= 1
			os.WriteFile(file, b, 0o600)
		},
		"truncated": func(t *testing.T, file string, _ bpfKey) {
			b, _ := os.ReadFile(file)
			os.WriteFile(file, b[:len(b)-8], 0o600)
		},
		"another crun": func(t *testing.T, file string, k bpfKey) {
			k.crun = strings.Repeat("cd", 32)
			k.key = makeKey(k.crun, k.profile)
			os.WriteFile(file, encodeProgram(k, prog), 0o600) // under the current key's name
		},
		"another crun, its own name": func(t *testing.T, file string, k bpfKey) {
			os.Remove(file)
			k.crun = strings.Repeat("cd", 32)
			k.key = makeKey(k.crun, k.profile)
			os.WriteFile(filepath.Join(filepath.Dir(file), k.key+".bpf"), encodeProgram(k, prog), 0o600)
		},
		"garbage": func(t *testing.T, file string, _ bpfKey) { os.WriteFile(file, []byte("hello\n\nworld"), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			c, crun := newBPFCache(t, &logs)
			bin, err := c.crunDigest(crun)
			if err != nil {
				t.Fatal(err)
			}
			k := bpfKey{crun: bin, profile: profile}
			k.key = makeKey(k.crun, k.profile)
			if err := writeProgram(c.dir, k, prog); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(c.dir, k.key+".bpf")
			spoil(t, file, k)

			next := &bpfCache{dir: c.dir, log: c.log}
			next.load(crun)
			got, ok := next.m[k.key]
			left, _ := os.ReadDir(c.dir)
			if name == "good" {
				if !ok || got != base64.StdEncoding.EncodeToString(prog) {
					t.Fatalf("kept program not loaded (%v): %s", ok, logs.String())
				}
				return
			}
			if ok || len(next.m) != 0 {
				t.Errorf("a spoilt program was loaded: %v", next.m)
			}
			if len(left) != 0 {
				t.Errorf("spoilt file left: %v", left)
			}
			if !strings.Contains(logs.String(), "discarding a kept program") {
				t.Errorf("no log line: %q", logs.String())
			}
		})
	}
}

// The crun binary's digest is part of the key: another binary at the same
// path makes another key.
func TestBPFKeyFollowsCrunBinary(t *testing.T) {
	var logs bytes.Buffer
	c, crun := newBPFCache(t, &logs)
	a, _ := c.crunDigest(crun)
	os.WriteFile(crun, []byte("crun 1.9.0, same size"), 0o700)
	b, _ := c.crunDigest(crun)
	if a == b || a == "" {
		t.Fatalf("digests %q %q", a, b)
	}
}

func FuzzDecodeProgram(f *testing.F) {
	k := bpfKey{crun: strings.Repeat("ab", 32), profile: strings.Repeat("cd", 32)}
	f.Add(encodeProgram(k, make([]byte, 16)))
	f.Add([]byte("blackbox crun seccomp bpf 1\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, prog, err := decodeProgram(data)
		if err != nil {
			return
		}
		if validProgram(prog) != nil || k.key != makeKey(k.crun, k.profile) {
			t.Fatalf("accepted a bad program: %x", data)
		}
		if !bytes.Equal(encodeProgram(k, prog), data) {
			t.Fatalf("not the file it decoded from: %q", data)
		}
	})
}
