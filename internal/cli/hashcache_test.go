package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// An unchanged file is not added again (its blob's mtime stays); a changed
// one, or one whose blob is gone, is.
func TestAddCachedSkipsUnchangedFiles(t *testing.T) {
	dir := t.TempDir()
	blobs := contract.DirBlobs(filepath.Join(dir, "blobs"))
	file := filepath.Join(dir, "image.tar")
	os.WriteFile(file, []byte("one"), 0o600)
	d1, n, err := addCached(dir, blobs, file, true)
	if err != nil || n != 3 {
		t.Fatal(d1, n, err)
	}
	blob := filepath.Join(string(blobs), d1[7:])
	// Mark the blob: a second add would replace it.
	os.WriteFile(blob, []byte("one"), 0o600)
	marked, _ := os.Stat(blob)
	if d, _, err := addCached(dir, blobs, file, true); err != nil || d != d1 {
		t.Fatalf("unchanged: %s %v, want %s", d, err, d1)
	}
	if st, _ := os.Stat(blob); !os.SameFile(st, marked) {
		t.Error("an unchanged file was added again")
	}
	if _, _, ok := cachedDigest(dir, blobs, file, true); !ok {
		t.Error("an image added as one is not known as a checked image")
	}
	input := filepath.Join(dir, "input")
	os.WriteFile(input, []byte("in"), 0o600)
	addCached(dir, blobs, input, false)
	if _, _, ok := cachedDigest(dir, blobs, input, true); ok {
		t.Error("a file added as an input passes for a checked image")
	}
	os.WriteFile(file, []byte("two"), 0o600)
	if d, _, err := addCached(dir, blobs, file, true); err != nil || d == d1 {
		t.Fatalf("changed file: digest %s %v, the old one", d, err)
	}
	os.WriteFile(file, []byte("one"), 0o600)
	d3, _, _ := addCached(dir, blobs, file, true)
	os.Remove(filepath.Join(string(blobs), d3[7:]))
	if d, _, err := addCached(dir, blobs, file, true); err != nil || d != d1 {
		t.Fatalf("blob gone: %s %v", d, err)
	}
	if _, err := os.Stat(blob); err != nil {
		t.Error("a file whose blob was gone was not added again")
	}
}
