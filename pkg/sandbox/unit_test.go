package sandbox

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tarOf(t testing.TB, hdrs ...*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		data := make([]byte, h.Size)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	return buf.Bytes()
}

func reg(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size, Mode: 0o644}
}

func TestValidateArchive(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"oci", tarOf(t, reg("oci-layout", 10), reg("index.json", 10), &tar.Header{Name: "blobs/", Typeflag: tar.TypeDir}, reg("blobs/sha256/ab", 100)), true},
		{"docker", tarOf(t, reg("manifest.json", 10), reg("abc/layer.tar", 100), &tar.Header{Name: "def/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../abc/layer.tar"}), true},
		{"dot slash", tarOf(t, reg("./manifest.json", 10)), true},
		{"traversal", tarOf(t, reg("manifest.json", 10), reg("a/../../b", 1)), false},
		{"dotdot", tarOf(t, reg("manifest.json", 10), reg("..", 1)), false},
		{"absolute", tarOf(t, reg("manifest.json", 10), reg("/x", 1)), false},
		{"abs symlink", tarOf(t, reg("manifest.json", 10), &tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "/etc"}), false},
		{"escaping symlink", tarOf(t, reg("manifest.json", 10), &tar.Header{Name: "a/x", Typeflag: tar.TypeSymlink, Linkname: "../../etc"}), false},
		{"duplicate", tarOf(t, reg("manifest.json", 10), reg("manifest.json", 10)), false},
		{"oversized entry", tarOf(t, reg("manifest.json", 10), reg("big", 2<<20)), false},
		{"huge metadata", tarOf(t, reg("manifest.json", maxMetadataBytes+1)), false},
		{"no image", tarOf(t, reg("readme", 10)), false},
		{"fifo", tarOf(t, reg("manifest.json", 10), &tar.Header{Name: "f", Typeflag: tar.TypeFifo}), false},
		{"control char", tarOf(t, reg("manifest.json", 10), reg("a\nb", 1)), false},
		{"garbage", bytes.Repeat([]byte{0xAB}, 1024), false},
		{"truncated", tarOf(t, reg("manifest.json", 10), reg("x", 4096))[:1536], false},
	}
	for _, c := range cases {
		err := ValidateArchive(bytes.NewReader(c.b), 1<<20)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadImage) {
			t.Errorf("%s: %v does not wrap ErrBadImage", c.name, err)
		}
	}
}

// FuzzValidateArchive: whatever the bytes, the validator neither panics nor
// accepts an archive with an unsafe entry.
func FuzzValidateArchive(f *testing.F) {
	f.Add(tarOf(f, reg("manifest.json", 10), reg("abc/layer.tar", 100)))
	f.Add(tarOf(f, reg("oci-layout", 10), reg("index.json", 10), reg("blobs/sha256/ab", 100)))
	f.Add(tarOf(f, reg("manifest.json", 10), reg("../evil", 4)))
	f.Add(tarOf(f, reg("manifest.json", 10), &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../x"}))
	f.Add([]byte("garbage"))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 64 << 10
		if ValidateArchive(bytes.NewReader(b), max) != nil {
			return
		}
		// Accepted: check every entry again, independently.
		tr := tar.NewReader(bytes.NewReader(b))
		var total int64
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("accepted an archive tar cannot read: %v", err)
			}
			total += h.Size
			if strings.HasPrefix(h.Name, "/") || strings.Contains("/"+h.Name+"/", "/../") {
				t.Fatalf("accepted unsafe name %q", h.Name)
			}
			switch h.Typeflag {
			case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeXGlobalHeader:
			case tar.TypeSymlink:
				j := filepath.Join(filepath.Dir(h.Name), h.Linkname)
				if strings.HasPrefix(h.Linkname, "/") || j == ".." || strings.HasPrefix(j, "../") {
					t.Fatalf("accepted escaping symlink %q -> %q", h.Name, h.Linkname)
				}
			default:
				t.Fatalf("accepted entry type %q", h.Typeflag)
			}
		}
		if total > max {
			t.Fatalf("accepted %d bytes of entries over the %d cap", total, max)
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"64MiB": 64 << 20, "1G": 1 << 30, "1.5GiB": 3 << 29, "512k": 512 << 10, "4096": 4096,
		"10MB": 10_000_000, "2 MiB": 2 << 20, "1B": 1,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1M", "abc", "1XB", "1e400", "NaN"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for key, mod := range map[string]func(*Config){
		"address":         func(c *Config) { c.Address = "" },
		"namespace":       func(c *Config) { c.Namespace = "a/b" },
		"runtime":         func(c *Config) { c.Runtime = "kata" },
		"userns":          func(c *Config) { c.UserNS = "maybe" },
		"max_image_bytes": func(c *Config) { c.MaxImageBytes = 0 },
		"output_cap":      func(c *Config) { c.OutputCap = -1 },
		"default_pids":    func(c *Config) { c.DefaultPids = 0 },
		"image_cache_age": func(c *Config) { c.ImageCacheAge = -time.Second },
	} {
		c := DefaultConfig()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: err %v, want one naming the key", key, err)
		}
	}
}

func TestCapWriter(t *testing.T) {
	var buf bytes.Buffer
	w := &capWriter{w: &buf, cap: 10}
	for _, s := range []string{"hello", "world", "again"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %d %v", n, err)
		}
	}
	if buf.String() != "helloworld" || w.n != 15 || !w.truncated() {
		t.Errorf("got %q n=%d truncated=%v", buf.String(), w.n, w.truncated())
	}
	exact := &capWriter{w: io.Discard, cap: 5}
	exact.Write([]byte("12345"))
	if exact.truncated() {
		t.Error("exactly the cap reported as truncated")
	}
}

func TestTarDirReproducible(t *testing.T) {
	mk := func() string {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "sub"), 0o755)
		os.WriteFile(filepath.Join(d, "sub", "a"), []byte("A"), 0o644)
		os.WriteFile(filepath.Join(d, "b"), []byte("BB"), 0o600)
		os.Symlink("/etc/passwd", filepath.Join(d, "l"))
		return d
	}
	d1, d2 := mk(), mk()
	time.Sleep(10 * time.Millisecond)
	os.Chtimes(filepath.Join(d2, "b"), time.Now(), time.Now())
	o1, err := tarDir(d1, nil)
	if err != nil {
		t.Fatal(err)
	}
	o2, _ := tarDir(d2, nil)
	if o1 != o2 || o1.Files != 2 {
		t.Errorf("%+v vs %+v", o1, o2)
	}
}
