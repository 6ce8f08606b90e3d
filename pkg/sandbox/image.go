package sandbox

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/archive/compression"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is an image ready to run: imported, checked and unpacked.
type Image struct {
	// Name is what Job.Image takes. Imported tarballs are named
	// "blackbox.local/import:<hex of the tarball's sha256>", so a buyer's
	// tarball cannot name itself over another image.
	Name string `json:"name"`
	// Digest is the tarball's sha256 ("sha256:<hex>") for imports, or the
	// manifest digest for pulls.
	Digest string `json:"digest"`
	// Size is the unpacked size in bytes (content plus snapshots).
	Size int64 `json:"size"`
	// Cached is true when the image was already in the cache.
	Cached bool `json:"cached"`
}

const importPrefix = "blackbox.local/import:"

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ImportName is the image name ImportImage gives the tarball with digest d.
func ImportName(d string) string { return importPrefix + strings.TrimPrefix(d, "sha256:") }

// ImportImage imports an OCI-layout or docker-archive tarball read from r.
// If wantDigest ("sha256:<hex>") is not empty, the tarball's sha256 must
// equal it (ErrDigestMismatch); an image already cached under that digest is
// returned without reading r. The tarball is spooled to disk with a size cap,
// checked by ValidateArchive, imported without any of the names it carries,
// its layers' unpacked size counted from their decompressed streams (refused
// as soon as the count crosses max_unpacked_bytes, before containerd unpacks
// anything, and removed with every blob imported), then unpacked once.
// Nothing runs before all checks passed.
func (s *Sandbox) ImportImage(ctx context.Context, r io.Reader, wantDigest string) (Image, error) {
	ctx = s.ctx(ctx)
	if wantDigest != "" && !digestRE.MatchString(wantDigest) {
		return Image{}, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrBadImage, wantDigest)
	}
	if wantDigest != "" {
		if img, err := s.cachedImage(ctx, ImportName(wantDigest)); err == nil {
			return Image{Name: img.Name(), Digest: wantDigest, Cached: true}, nil
		}
	}

	f, err := os.CreateTemp(s.tmpDir, "import-*.tar")
	if err != nil {
		return Image{}, fmt.Errorf("import: spool: %w", err)
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, s.cfg.MaxImageBytes+1))
	if err != nil {
		return Image{}, fmt.Errorf("import: read tarball: %w", err)
	}
	if n > s.cfg.MaxImageBytes {
		return Image{}, fmt.Errorf("%w: tarball larger than max_image_bytes (%s)", ErrBadImage, FormatSize(s.cfg.MaxImageBytes))
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if wantDigest != "" && got != wantDigest {
		return Image{}, fmt.Errorf("%w: tarball is %s, buyer named %s", ErrDigestMismatch, got, wantDigest)
	}
	name := ImportName(got)
	// Spooling (from a slow buyer, perhaps) runs in parallel; importing
	// and unpacking one at a time, so that one digest is unpacked once.
	s.importMu.Lock()
	defer s.importMu.Unlock()
	if img, err := s.cachedImage(ctx, name); err == nil {
		return Image{Name: img.Name(), Digest: got, Cached: true}, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Image{}, err
	}
	if err := ValidateArchive(f, s.cfg.MaxImageBytes); err != nil {
		return Image{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Image{}, err
	}
	size, err := s.importArchive(ctx, f, name)
	if err != nil {
		return Image{}, err
	}
	s.log.Info("image imported", "image", name, "size", size)
	s.collectImages(ctx, name)
	return Image{Name: name, Digest: got, Size: size}, nil
}

// CachedImport returns the image imported from a tarball of digest
// ("sha256:<hex>") when it is in the cache, unpacked, and false otherwise
// (a malformed digest, one never imported, or one collected since). Only
// ImportImage names images ImportName(digest), after hashing the tarball
// to digest, so the image returned is the one that digest names.
func (s *Sandbox) CachedImport(ctx context.Context, digest string) (Image, bool) {
	if !digestRE.MatchString(digest) {
		return Image{}, false
	}
	ctx = s.ctx(ctx)
	img, err := s.cachedImage(ctx, ImportName(digest))
	if err != nil {
		return Image{}, false
	}
	// About to run: not the least recently used for the collector.
	s.touchImage(ctx, img.Name())
	return Image{Name: img.Name(), Digest: digest, Cached: true}, true
}

// importArchive imports the checked tarball under name only (names inside
// the archive are ignored) and unpacks it. The layers' unpacked size is
// counted from their decompressed streams before containerd unpacks
// anything; on any refusal the lease is deleted synchronously, so that the
// garbage collector removes the imported blobs before this returns.
func (s *Sandbox) importArchive(ctx context.Context, r io.Reader, name string) (int64, error) {
	ls := s.client.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour))
	if err != nil {
		return 0, fmt.Errorf("import: lease: %w", err)
	}
	lctx := leases.WithLease(ctx, lease.ID)
	refused := true
	defer func() {
		bg := context.WithoutCancel(ctx)
		var opts []leases.DeleteOpt
		if refused {
			opts = append(opts, leases.SynchronousDelete)
		}
		if err := ls.Delete(bg, lease, opts...); err != nil && !errdefs.IsNotFound(err) {
			s.log.Warn("import: delete lease", "lease", lease.ID, "err", err)
		}
	}()
	cs := s.client.ContentStore()
	index, err := archive.ImportIndex(lctx, cs, r)
	if err != nil {
		return 0, fmt.Errorf("%w: import: %v", ErrBadImage, err)
	}
	handler := images.SetChildrenLabels(cs, images.FilterPlatforms(images.ChildrenHandler(cs), platforms.Default()))
	if err := images.WalkNotEmpty(lctx, handler, index); err != nil {
		return 0, fmt.Errorf("%w: import: %v", ErrBadImage, err)
	}
	if _, err := s.checkUnpackedSize(lctx, index); err != nil {
		return 0, err
	}
	rec := images.Image{
		Name:   name,
		Target: index,
		Labels: map[string]string{labelLastUsed: strconv.FormatInt(time.Now().Unix(), 10)},
	}
	if _, err := s.client.ImageService().Create(lctx, rec); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return 0, fmt.Errorf("import: create image: %w", err)
		}
		if _, err := s.client.ImageService().Update(lctx, rec, "target"); err != nil {
			return 0, fmt.Errorf("import: update image: %w", err)
		}
	}
	img := containerd.NewImageWithPlatform(s.client, rec, platforms.Default())
	fail := func(err error) (int64, error) {
		s.deleteImage(context.WithoutCancel(ctx), name)
		return 0, err
	}
	if err := img.Unpack(lctx, s.cfg.Snapshotter); err != nil {
		return fail(fmt.Errorf("%w: unpack: %v", ErrBadImage, err))
	}
	size, err := img.Usage(lctx, containerd.WithSnapshotUsage())
	if err != nil {
		return fail(fmt.Errorf("import: usage: %w", err))
	}
	if size > s.cfg.MaxUnpackedBytes {
		return fail(fmt.Errorf("%w: unpacks to %s, more than max_unpacked_bytes (%s)", ErrBadImage, FormatSize(size), FormatSize(s.cfg.MaxUnpackedBytes)))
	}
	refused = false
	s.mu.Lock()
	s.imgCache[name] = img
	s.mu.Unlock()
	return size, nil
}

// checkUnpackedSize reads the layers of target's manifest for this platform
// from the content store, decompressed, and adds up what unpacking them
// writes: each entry's declared size (a sparse file's full size), rounded
// up to tar blocks, plus a block per entry. It stops and refuses the image
// with ErrBadImage as soon as the sum crosses max_unpacked_bytes, so that a
// layer of a few MiB that inflates to GiB is read only up to the cap and is
// never handed to containerd. It returns the sum.
func (s *Sandbox) checkUnpackedSize(ctx context.Context, target ocispec.Descriptor) (int64, error) {
	cs := s.client.ContentStore()
	m, err := images.Manifest(ctx, cs, target, platforms.Default())
	if err != nil {
		return 0, fmt.Errorf("%w: manifest: %v", ErrBadImage, err)
	}
	limit := s.cfg.MaxUnpackedBytes
	var total int64
	over := func(layer int) error {
		return fmt.Errorf("%w: layers 1..%d unpack to more than max_unpacked_bytes (%s); refused before unpacking",
			ErrBadImage, layer, FormatSize(limit))
	}
	for i, l := range m.Layers {
		n, err := layerUnpackedSize(ctx, cs, l, limit-total)
		total += n
		if errors.Is(err, errOverCap) {
			return total, over(i + 1)
		}
		if err != nil {
			return total, fmt.Errorf("%w: layer %d (%s): %v", ErrBadImage, i+1, l.Digest, err)
		}
	}
	return total, nil
}

var errOverCap = errors.New("over the cap")

// layerUnpackedSize is checkUnpackedSize for one layer: it stops with
// errOverCap as soon as the layer's sum would exceed limit.
func layerUnpackedSize(ctx context.Context, cs content.Provider, desc ocispec.Descriptor, limit int64) (int64, error) {
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	defer ra.Close()
	return unpackedSize(content.NewReader(ra), limit)
}

// unpackedSize is layerUnpackedSize of the layer blob read from r
// (a tar, gzip- or zstd-compressed or not).
func unpackedSize(r io.Reader, limit int64) (int64, error) {
	zr, err := compression.DecompressStream(r)
	if err != nil {
		return 0, fmt.Errorf("decompress: %w", err)
	}
	defer zr.Close()
	const block = 512
	var total int64
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("not a tar layer: %w", err)
		}
		if h.Size < 0 || h.Size > limit-total {
			return total, errOverCap
		}
		need := block + h.Size/block*block // the header, the content in blocks
		if h.Size%block != 0 {
			need += block
		}
		if need < 0 || need > limit-total { // < 0: overflowed
			return total, errOverCap
		}
		total += need
	}
}

// Pull fetches ref from its registry, checks its layers' unpacked size as
// ImportImage does, and unpacks it. It needs a reachable registry; an error
// wraps ErrBadImage.
func (s *Sandbox) Pull(ctx context.Context, ref string) (Image, error) {
	ctx = s.ctx(ctx)
	if img, err := s.cachedImage(ctx, ref); err == nil {
		return Image{Name: ref, Digest: img.Target().Digest.String(), Cached: true}, nil
	}
	// Fetched, then checked, then unpacked: a bomb is never unpacked.
	img, err := s.client.Pull(ctx, ref, containerd.WithPullSnapshotter(s.cfg.Snapshotter),
		containerd.WithPullLabel(labelLastUsed, strconv.FormatInt(time.Now().Unix(), 10)))
	if err != nil {
		return Image{}, fmt.Errorf("%w: pull %s: %v", ErrBadImage, ref, err)
	}
	if _, err := s.checkUnpackedSize(ctx, img.Target()); err != nil {
		s.deleteImage(ctx, ref)
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := img.Unpack(ctx, s.cfg.Snapshotter); err != nil {
		s.deleteImage(ctx, ref)
		return Image{}, fmt.Errorf("%w: pull %s: unpack: %v", ErrBadImage, ref, err)
	}
	size, err := img.Usage(ctx, containerd.WithSnapshotUsage())
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: usage: %w", ref, err)
	}
	if size > s.cfg.MaxUnpackedBytes {
		s.deleteImage(ctx, ref)
		return Image{}, fmt.Errorf("%w: %s unpacks to %s, more than max_unpacked_bytes", ErrBadImage, ref, FormatSize(size))
	}
	s.mu.Lock()
	s.imgCache[ref] = img
	s.mu.Unlock()
	s.collectImages(ctx, ref)
	return Image{Name: ref, Digest: img.Target().Digest.String(), Size: size}, nil
}

// cachedImage returns the unpacked image called name, from memory or
// containerd.
func (s *Sandbox) cachedImage(ctx context.Context, name string) (containerd.Image, error) {
	s.mu.Lock()
	img, ok := s.imgCache[name]
	s.mu.Unlock()
	if ok {
		// Another process sharing the namespace may have collected it.
		if _, err := s.client.ImageService().Get(ctx, name); err == nil {
			return img, nil
		}
		s.mu.Lock()
		delete(s.imgCache, name)
		s.mu.Unlock()
	}
	rec, err := s.client.ImageService().Get(ctx, name)
	if err != nil {
		return nil, err
	}
	img = containerd.NewImageWithPlatform(s.client, rec, platforms.Default())
	ok, err = img.IsUnpacked(ctx, s.cfg.Snapshotter)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := img.Unpack(ctx, s.cfg.Snapshotter); err != nil {
			return nil, fmt.Errorf("%w: unpack %s: %v", ErrBadImage, name, err)
		}
	}
	s.mu.Lock()
	s.imgCache[name] = img
	s.mu.Unlock()
	return img, nil
}

// touchImage records that name was used now (at most once a minute).
func (s *Sandbox) touchImage(ctx context.Context, name string) {
	now := time.Now()
	s.mu.Lock()
	last := s.touched[name]
	if now.Sub(last) < time.Minute {
		s.mu.Unlock()
		return
	}
	s.touched[name] = now
	s.mu.Unlock()
	_, err := s.client.ImageService().Update(ctx, images.Image{
		Name:   name,
		Labels: map[string]string{labelLastUsed: strconv.FormatInt(now.Unix(), 10)},
	}, "labels."+labelLastUsed)
	if err != nil {
		s.log.Debug("touch image", "image", name, "err", err)
	}
}

func (s *Sandbox) deleteImage(ctx context.Context, name string) error {
	s.mu.Lock()
	delete(s.imgCache, name)
	delete(s.touched, name)
	s.mu.Unlock()
	err := s.client.ImageService().Delete(ctx, name, images.SynchronousDelete())
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// CollectImages removes cached images unused for longer than
// image_cache_age, then the least recently used until the cache fits in
// image_cache_bytes. Images of running jobs are kept. It returns the names
// removed.
func (s *Sandbox) CollectImages(ctx context.Context) ([]string, error) {
	return s.collect(ctx, "")
}

// collect is CollectImages keeping the image called keep (just imported).
func (s *Sandbox) collect(ctx context.Context, keep string) ([]string, error) {
	ctx = s.ctx(ctx)
	list, err := s.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("collect images: %w", err)
	}
	type entry struct {
		name string
		used int64
		size int64
	}
	var (
		entries []entry
		total   int64
		removed []string
		now     = time.Now()
	)
	for _, rec := range list {
		used, _ := strconv.ParseInt(rec.Labels[labelLastUsed], 10, 64)
		if used == 0 {
			used = rec.UpdatedAt.Unix()
		}
		size, err := containerd.NewImageWithPlatform(s.client, rec, platforms.Default()).Usage(ctx, containerd.WithSnapshotUsage())
		if err != nil {
			s.log.Debug("image usage", "image", rec.Name, "err", err)
		}
		entries = append(entries, entry{rec.Name, used, size})
		total += size
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].used < entries[j].used })
	for _, e := range entries {
		old := s.cfg.ImageCacheAge > 0 && now.Sub(time.Unix(e.used, 0)) > s.cfg.ImageCacheAge
		big := total > s.cfg.ImageCacheBytes
		if !old && !big {
			continue
		}
		s.mu.Lock()
		busy := s.inUse[e.name] > 0 || e.name == keep
		s.mu.Unlock()
		if busy {
			continue
		}
		if err := s.deleteImage(ctx, e.name); err != nil {
			return removed, fmt.Errorf("collect image %s: %w", e.name, err)
		}
		total -= e.size
		removed = append(removed, e.name)
		s.log.Info("image removed from cache", "image", e.name, "old", old, "size", e.size)
	}
	return removed, nil
}

func (s *Sandbox) collectImages(ctx context.Context, keep string) {
	if _, err := s.collect(ctx, keep); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("image cache collection failed", "err", err)
	}
}
