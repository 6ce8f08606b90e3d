// Package imagetar checks image tarballs (OCI layout or docker archive) from
// untrusted buyers before anything parses them further, and writes
// one-layer image tarballs without a registry (build.go). It is separate
// from pkg/sandbox so that it can be fuzzed without containerd linked in.
package imagetar

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// ErrBadImage is wrapped by every error of Validate.
var ErrBadImage = errors.New("bad image")

// maxArchiveEntries bounds the entries of an image tarball: an image has a
// handful of blobs, and a tarball of millions of tiny entries is an attack on
// the importer, not an image.
const maxArchiveEntries = 10_000

// maxMetadataBytes bounds the JSON files of an image tarball (manifest.json,
// index.json, oci-layout, repositories).
const maxMetadataBytes = 4 << 20

// Validate checks that r is an uncompressed OCI-layout or
// docker-archive tarball of at most maxBytes that is safe to hand to
// containerd: every entry is a regular file or directory (or a symlink
// staying inside the archive) with a clean relative name, nothing is larger
// than the archive may be, and an index.json or manifest.json is present.
// It reads r to the end and returns an error wrapping ErrBadImage otherwise.
// It does not look inside layers: containerd applies them confined to the
// snapshot and the unpacked size is capped after unpacking.
func Validate(r io.Reader, maxBytes int64) error {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(4); len(magic) >= 2 {
		switch {
		case magic[0] == 0x1f && magic[1] == 0x8b:
			return fmt.Errorf("%w: gzip-compressed archive; decompress it (gunzip) before importing", ErrBadImage)
		case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			return fmt.Errorf("%w: zstd-compressed archive; decompress it before importing", ErrBadImage)
		}
	}
	tr := tar.NewReader(br)
	var (
		total    int64
		entries  int
		seen     = map[string]bool{}
		hasIndex bool
		hasDock  bool
	)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: not a valid tar archive: %v", ErrBadImage, err)
		}
		entries++
		if entries > maxArchiveEntries {
			return fmt.Errorf("%w: more than %d entries", ErrBadImage, maxArchiveEntries)
		}
		name, err := cleanEntryName(h.Name)
		if err != nil {
			return err
		}
		if h.Size < 0 || h.Size > maxBytes || total+h.Size > maxBytes {
			return fmt.Errorf("%w: entry %q: archive larger than %s", ErrBadImage, name, formatSize(maxBytes))
		}
		total += h.Size
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			if seen[name] {
				return fmt.Errorf("%w: entry %q appears twice", ErrBadImage, name)
			}
			seen[name] = true
			switch name {
			case "index.json", "manifest.json", "oci-layout", "repositories":
				if h.Size > maxMetadataBytes {
					return fmt.Errorf("%w: %s larger than %s", ErrBadImage, name, formatSize(maxMetadataBytes))
				}
				if name == "index.json" {
					hasIndex = true
				}
				if name == "manifest.json" {
					hasDock = true
				}
			}
		case tar.TypeDir:
		case tar.TypeSymlink:
			// docker save links identical layers to one another.
			if err := checkLink(name, h.Linkname); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("%w: entry %q: type %q not allowed in an image archive", ErrBadImage, name, string(h.Typeflag))
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fmt.Errorf("%w: entry %q: %v", ErrBadImage, name, err)
		}
	}
	if entries == 0 {
		return fmt.Errorf("%w: empty archive", ErrBadImage)
	}
	if !hasIndex && !hasDock {
		return fmt.Errorf("%w: neither index.json (OCI layout) nor manifest.json (docker archive): not an image", ErrBadImage)
	}
	return nil
}

// cleanEntryName refuses absolute names, ".." components and control
// characters, and returns the name without a trailing slash.
func cleanEntryName(n string) (string, error) {
	if n == "" || len(n) > 1024 {
		return "", fmt.Errorf("%w: entry name of length %d", ErrBadImage, len(n))
	}
	if strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return "", fmt.Errorf("%w: entry %q: control character or backslash in name", ErrBadImage, n)
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("%w: entry %q: absolute path", ErrBadImage, n)
	}
	trimmed := strings.TrimPrefix(strings.TrimSuffix(n, "/"), "./")
	for _, part := range strings.Split(trimmed, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: entry %q: path traversal", ErrBadImage, n)
		}
	}
	c := path.Clean(trimmed)
	if c == "." || c == "" {
		return ".", nil
	}
	return c, nil
}

// checkLink accepts a symlink only if its target, resolved from the link's
// directory, stays inside the archive.
func checkLink(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") {
		return fmt.Errorf("%w: symlink %q -> %q: must be relative", ErrBadImage, name, target)
	}
	if strings.ContainsFunc(target, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: symlink %q: control character in target", ErrBadImage, name)
	}
	j := path.Join(path.Dir(name), target)
	if j == ".." || strings.HasPrefix(j, "../") {
		return fmt.Errorf("%w: symlink %q -> %q: points outside the archive", ErrBadImage, name, target)
	}
	return nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
