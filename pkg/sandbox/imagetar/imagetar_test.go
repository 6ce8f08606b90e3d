package imagetar

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
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

func TestValidate(t *testing.T) {
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
		err := Validate(bytes.NewReader(c.b), 1<<20)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadImage) {
			t.Errorf("%s: %v does not wrap ErrBadImage", c.name, err)
		}
	}
}

// FuzzValidate: whatever the bytes, the validator neither panics nor
// accepts an archive with an unsafe entry.
func FuzzValidate(f *testing.F) {
	f.Add(tarOf(f, reg("manifest.json", 10), reg("abc/layer.tar", 100)))
	f.Add(tarOf(f, reg("oci-layout", 10), reg("index.json", 10), reg("blobs/sha256/ab", 100)))
	f.Add(tarOf(f, reg("manifest.json", 10), reg("../evil", 4)))
	f.Add(tarOf(f, reg("manifest.json", 10), &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../x"}))
	f.Add([]byte("garbage"))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 64 << 10
		if Validate(bytes.NewReader(b), max) != nil {
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
