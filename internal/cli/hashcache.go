package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// hashCacheFile, in the data dir, remembers the digest of each file submit
// added to the blob store, by the file's identity: an unchanged image or
// input is not read, hashed and copied again on the next submit.
const hashCacheFile = "hashes.json"

// fileKey is what identifies a file's content without reading it: its
// path, device and inode, size, and modification and change times (the
// change time cannot be set back by the user, so a rewrite that keeps the
// mtime still misses).
type fileKey struct {
	Path  string `json:"path"`
	Dev   uint64 `json:"dev"`
	Inode uint64 `json:"inode"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

type hashEntry struct {
	fileKey
	Digest string `json:"digest"`
	// Image: the file was submitted as an image, and passed checkImage.
	Image bool `json:"image,omitempty"`
}

func keyOf(path string, st os.FileInfo) (fileKey, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, false
	}
	return fileKey{Path: path, Dev: uint64(sys.Dev), Inode: sys.Ino, Size: st.Size(),
		Mtime: st.ModTime().UnixNano(), Ctime: sys.Ctim.Nano()}, true
}

// cachedDigest returns the digest the cache in dataDir knows for the file
// at path, if the file is unchanged since and the blob store still holds
// its blob; with image, only if it was added as an image.
func cachedDigest(dataDir string, blobs contract.DirBlobs, path string, image bool) (string, int64, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", 0, false
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", 0, false
	}
	key, ok := keyOf(abs, st)
	e, hit := readHashCache(dataDir)[abs]
	if !ok || !hit || e.fileKey != key || image && !e.Image {
		return "", 0, false
	}
	r, n, err := blobs.Open(e.Digest)
	if err != nil {
		return "", 0, false
	}
	r.Close()
	return e.Digest, n, n == key.Size
}

// addCached adds the file at path to blobs unless the cache in dataDir
// knows its digest (cachedDigest), and remembers the digest (and that the
// file is a checked image, with image).
func addCached(dataDir string, blobs contract.DirBlobs, path string, image bool) (string, int64, error) {
	if digest, n, ok := cachedDigest(dataDir, blobs, path, image); ok {
		return digest, n, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", 0, err
	}
	fh, err := os.Open(abs)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", 0, err
	}
	digest, n, err := blobs.Add(fh)
	key, ok := keyOf(abs, st)
	if err != nil || !ok || n != key.Size {
		return digest, n, err // a file that changed while read is not remembered
	}
	cache := readHashCache(dataDir)
	cache[abs] = hashEntry{fileKey: key, Digest: digest, Image: image}
	if err := writeHashCache(filepath.Join(dataDir, hashCacheFile), cache); err != nil {
		return "", 0, fmt.Errorf("remember the digest of %s: %w", path, err)
	}
	return digest, n, nil
}

// readHashCache reads the cache in dataDir; a missing or damaged one is
// empty (it is rebuilt).
func readHashCache(dataDir string) map[string]hashEntry {
	cache := map[string]hashEntry{}
	if b, err := os.ReadFile(filepath.Join(dataDir, hashCacheFile)); err == nil {
		_ = json.Unmarshal(b, &cache)
	}
	return cache
}

// writeHashCache replaces the cache file whole (a concurrent submit's
// entry may be lost: it is only hashed again).
func writeHashCache(path string, cache map[string]hashEntry) error {
	b, err := json.Marshal(cache)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hashes-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
