//go:build integration

package sandbox_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

// bombLayer is a gzipped tar of files named prefix-N, each of size zero bytes: a few
// hundred KiB that unpack to files*size bytes. It returns the compressed
// layer and its diff ID (sha256 of the uncompressed tar).
func bombLayer(t testing.TB, prefix string, files int, size int64) (layer []byte, diffID string) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, h))
	zeros := make([]byte, 1<<20)
	for i := 0; i < files; i++ {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s-%d", prefix, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
			t.Fatal(err)
		}
		for left := size; left > 0; {
			n := min(left, int64(len(zeros)))
			if _, err := tw.Write(zeros[:n]); err != nil {
				t.Fatal(err)
			}
			left -= n
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ociImage is an OCI-layout tarball of one image with the given gzipped
// layers.
func ociImage(t testing.TB, layers [][]byte, diffIDs []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	digest := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
	blob := func(b []byte) string {
		d := digest(b)
		put("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
		return d
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Cmd": []string{"/zeros-0"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	var ls []map[string]any
	for _, l := range layers {
		ls = append(ls, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(l), "size": len(l)})
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
		"layers": ls,
	})
	md := blob(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
			"platform": map[string]string{"os": "linux", "architecture": runtime.GOARCH}}},
	})
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", index)
	tw.Close()
	return buf.Bytes()
}

// A decompression bomb (issue 9, bug 5) is refused before containerd
// unpacks anything: no snapshot is ever prepared for it, and it leaves no
// content, snapshot or lease behind. One layer holding a 640 MiB file, and
// three layers of 100 files of 2 MiB whose sum crosses the cap only in the
// last one, are each a few hundred KiB gzipped; max_unpacked_bytes is 512 MiB.
func TestImportRefusesDecompressionBomb(t *testing.T) {
	needDaemon(t)
	big, bigID := bombLayer(t, "zeros", 1, 640<<20)
	var many [][]byte
	var manyIDs []string
	for i := 0; i < 3; i++ { // 200, 400, then 600 MiB
		l, id := bombLayer(t, fmt.Sprint("zeros", i), 100, 2<<20)
		many, manyIDs = append(many, l), append(manyIDs, id)
	}
	cases := []struct {
		name    string
		layers  [][]byte
		diffIDs []string
	}{
		{"one huge file", [][]byte{big}, []string{bigID}},
		{"cap crossed in the third layer", many, manyIDs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tarball := ociImage(t, c.layers, c.diffIDs)
			cfg := testConfig(t.TempDir())
			cfg.Namespace = testNS + "-bomb"
			cfg.MaxUnpackedBytes = 512 << 20
			sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			defer cleanNamespace(sb.Client(), cfg.Namespace)
			watch := watchSnapshots(t, sb, cfg.Namespace)
			start := time.Now()
			_, err = sb.ImportImage(context.Background(), bytes.NewReader(tarball), "")
			elapsed := time.Since(start)
			t.Logf("refused after %s (tarball %s): %v", elapsed.Round(time.Millisecond), sandbox.FormatSize(int64(len(tarball))), err)
			assertRefusedUnpacked(t, sb, cfg, err, watch()...)
		})
	}
}

// Pull checks the layers it fetched before unpacking them too.
func TestPullRefusesOverUnpackedCap(t *testing.T) {
	needDaemon(t)
	reg, err := sandboxtest.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	cfg := testConfig(t.TempDir())
	cfg.Namespace = testNS + "-pullcap"
	cfg.MaxUnpackedBytes = 1 << 20 // busybox is ~2 MiB
	sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	defer cleanNamespace(sb.Client(), cfg.Namespace)
	watch := watchSnapshots(t, sb, cfg.Namespace)
	_, err = sb.Pull(context.Background(), reg.Ref)
	assertRefusedUnpacked(t, sb, cfg, err, watch()...)
}

// watchSnapshots records the namespace's snapshot events until the
// returned function is called; it returns their topics.
func watchSnapshots(t testing.TB, sb *sandbox.Sandbox, ns string) func() []string {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), ns))
	evC, errC := sb.Client().EventService().Subscribe(ctx, `namespace=="`+ns+`",topic~="^/snapshot/"`)
	var (
		mu     sync.Mutex
		events []string
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case e := <-evC:
				mu.Lock()
				events = append(events, e.Topic)
				mu.Unlock()
			case <-errC:
				return
			}
		}
	}()
	return func() []string {
		time.Sleep(200 * time.Millisecond) // let events in flight arrive
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return events
	}
}

// assertRefusedUnpacked checks that err refuses an image over
// max_unpacked_bytes, that no snapshot event happened, and that nothing of
// the image (image record, content, snapshot, lease) is left.
func assertRefusedUnpacked(t *testing.T, sb *sandbox.Sandbox, cfg sandbox.Config, err error, events ...string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), cfg.Namespace)
	if !errors.Is(err, sandbox.ErrBadImage) || !strings.Contains(err.Error(), "max_unpacked_bytes") {
		t.Fatalf("err %v, want ErrBadImage over max_unpacked_bytes", err)
	}
	if len(events) > 0 {
		t.Errorf("containerd began unpacking: snapshot events %v", events)
	}
	if names := imageNamesIn(t, sb, cfg.Namespace); len(names) > 0 {
		t.Errorf("images left: %v", names)
	}
	var blobs []string
	sb.Client().ContentStore().Walk(ctx, func(i content.Info) error {
		blobs = append(blobs, i.Digest.String())
		return nil
	})
	if len(blobs) > 0 {
		t.Errorf("content left: %v", blobs)
	}
	var snaps []string
	sb.Client().SnapshotService(cfg.Snapshotter).Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		snaps = append(snaps, i.Name)
		return nil
	})
	if len(snaps) > 0 {
		t.Errorf("snapshots left: %v", snaps)
	}
	if ls, _ := sb.Client().LeasesService().List(ctx); len(ls) > 0 {
		var ids []string
		for _, l := range ls {
			ids = append(ids, l.ID)
		}
		t.Errorf("leases left: %v", ids)
	}
}
