package sandbox

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"testing"
)

func layerOf(t testing.TB, gz bool, sizes ...int64) []byte {
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for i, n := range sizes {
		tw.WriteHeader(&tar.Header{Name: string(rune('a' + i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: n})
		tw.Write(make([]byte, n))
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

func TestUnpackedSize(t *testing.T) {
	for _, gz := range []bool{false, true} {
		l := layerOf(t, gz, 1, 512, 1000)
		n, err := unpackedSize(bytes.NewReader(l), 1<<20)
		if want := int64(3*512 + 512 + 512 + 1024); err != nil || n != want {
			t.Errorf("gz %v: %d %v, want %d", gz, n, err, want)
		}
		if _, err := unpackedSize(bytes.NewReader(l), 2000); !errors.Is(err, errOverCap) {
			t.Errorf("gz %v: cap 2000: %v, want errOverCap", gz, err)
		}
	}
	if _, err := unpackedSize(bytes.NewReader([]byte("not a tar at all, not at all")), 1<<20); err == nil || errors.Is(err, errOverCap) {
		t.Errorf("garbage: %v", err)
	}
}

// FuzzUnpackedSize: a layer is the buyer's bytes. Counting never panics
// and never returns a negative size or one over the limit: it stops before.
func FuzzUnpackedSize(f *testing.F) {
	f.Add(layerOf(f, false, 1, 512, 1000), int64(1<<20))
	f.Add(layerOf(f, true, 4096), int64(100))
	f.Add([]byte{0x1f, 0x8b, 0x08}, int64(10))
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		if limit < 0 {
			limit = -limit
		}
		n, err := unpackedSize(bytes.NewReader(b), limit)
		if n < 0 {
			t.Fatalf("negative size %d", n)
		}
		if n > limit {
			t.Fatalf("size %d over limit %d (err %v)", n, limit, err)
		}
	})
}
