//go:build integration

package sandbox_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

type entry struct {
	name, link string
	typ        byte
	data       string
}

func mkTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o644, Size: int64(len(e.data))}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.data))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Bad tarballs are refused before anything runs, and leave nothing behind.
func TestImportRefusesBadTarballs(t *testing.T) {
	sb, _ := newSandbox(t)
	good, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		t.Fatal(err)
	}
	manifest := entry{name: "manifest.json", data: "[]"}
	cases := []struct {
		name    string
		tarball []byte
		digest  string
		want    error
		msg     string
	}{
		{"garbage", []byte("this is not a tarball at all, just some words and more words to fill a block" + strings.Repeat("x", 600)), "", sandbox.ErrBadImage, "not a valid tar"},
		{"empty", nil, "", sandbox.ErrBadImage, "empty archive"},
		{"not an image", mkTar(t, entry{name: "hello.txt", data: "hi"}), "", sandbox.ErrBadImage, "not an image"},
		{"gzip", gz(good), "", sandbox.ErrBadImage, "gzip"},
		{"traversal", mkTar(t, manifest, entry{name: "../../etc/cron.d/x", data: "evil"}), "", sandbox.ErrBadImage, "path traversal"},
		{"inner traversal", mkTar(t, manifest, entry{name: "blobs/../../x", data: "evil"}), "", sandbox.ErrBadImage, "path traversal"},
		{"absolute", mkTar(t, manifest, entry{name: "/etc/passwd", data: "evil"}), "", sandbox.ErrBadImage, "absolute"},
		{"symlink out", mkTar(t, manifest, entry{name: "blobs/x", typ: tar.TypeSymlink, link: "../../../etc/shadow"}), "", sandbox.ErrBadImage, "outside"},
		{"hardlink", mkTar(t, manifest, entry{name: "x", typ: tar.TypeLink, link: "/etc/shadow"}), "", sandbox.ErrBadImage, "not allowed"},
		{"device", mkTar(t, manifest, entry{name: "x", typ: tar.TypeChar}), "", sandbox.ErrBadImage, "not allowed"},
		{"bad manifest", mkTar(t, entry{name: "manifest.json", data: "{not json"}), "", sandbox.ErrBadImage, "import"},
		{"digest mismatch", good, sandboxtest.Digest([]byte("something else")), sandbox.ErrDigestMismatch, "buyer named"},
		{"malformed digest", good, "md5:1234", sandbox.ErrBadImage, "digest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := imageNames(t, sb)
			_, err := sb.ImportImage(context.Background(), bytes.NewReader(c.tarball), c.digest)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %v, want %v containing %q", err, c.want, c.msg)
			}
			t.Logf("refused: %v", err)
			if after := imageNames(t, sb); len(after) != len(before) {
				t.Errorf("images %v after refusal, were %v", after, before)
			}
			if tmp, _ := os.ReadDir(filepath.Join(sharedDir, "tmp")); len(tmp) != 0 {
				t.Errorf("spooled files left: %v", tmp)
			}
		})
	}

	t.Run("oversized", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(dir)
		cfg.Namespace = testNS + "-small"
		cfg.MaxImageBytes = 1 << 20 // busybox alone is ~2 MiB
		small, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer small.Close()
		defer cleanNamespace(small.Client(), cfg.Namespace)
		_, err = small.ImportImage(context.Background(), bytes.NewReader(good), "")
		if !errors.Is(err, sandbox.ErrBadImage) || !strings.Contains(err.Error(), "max_image_bytes") {
			t.Fatalf("err %v, want oversized", err)
		}
		t.Logf("refused: %v", err)
		cfg.MaxImageBytes = 64 << 20
		cfg.MaxUnpackedBytes = 1 << 20
		small2, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer small2.Close()
		tb, _ := sandboxtest.BusyboxImage(sandboxtest.OCILayout)
		_, err = small2.ImportImage(context.Background(), bytes.NewReader(tb), "")
		if !errors.Is(err, sandbox.ErrBadImage) || !strings.Contains(err.Error(), "max_unpacked_bytes") {
			t.Fatalf("err %v, want unpacked too large", err)
		}
		t.Logf("refused: %v", err)
		for _, n := range imageNames(t, small2) {
			if n == sandbox.ImportName(sandboxtest.Digest(tb)) {
				t.Errorf("refused image %s kept", n)
			}
		}
	})
}

func imageNames(t testing.TB, sb *sandbox.Sandbox) []string { return imageNamesIn(t, sb, testNS) }

func imageNamesIn(t testing.TB, sb *sandbox.Sandbox, ns string) []string {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	list, err := sb.Client().ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range list {
		names = append(names, i.Name)
	}
	return names
}

// Nonsense limits and jobs are refused before anything is created.
func TestRunRefusesBadLimits(t *testing.T) {
	sb, img := newSandbox(t)
	ok := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute}
	cases := []struct {
		name string
		mod  func(*sandbox.Job)
		want error
	}{
		{"zero memory", func(j *sandbox.Job) { j.Limits.MemoryBytes = 0 }, sandbox.ErrBadLimits},
		{"negative cpu", func(j *sandbox.Job) { j.Limits.CPUMillis = -500 }, sandbox.ErrBadLimits},
		{"zero cpu", func(j *sandbox.Job) { j.Limits.CPUMillis = 0 }, sandbox.ErrBadLimits},
		{"negative pids", func(j *sandbox.Job) { j.Limits.Pids = -1 }, sandbox.ErrBadLimits},
		{"negative disk", func(j *sandbox.Job) { j.Limits.DiskBytes = -1 }, sandbox.ErrBadLimits},
		{"no wall clock", func(j *sandbox.Job) { j.Limits.WallClock = 0 }, sandbox.ErrBadLimits},
		{"no image", func(j *sandbox.Job) { j.Image = "" }, sandbox.ErrBadJob},
		{"unknown image", func(j *sandbox.Job) { j.Image = "blackbox.local/import:nope" }, sandbox.ErrBadJob},
		{"bad env", func(j *sandbox.Job) { j.Env = []string{"NOEQUALS"} }, sandbox.ErrBadJob},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := sandbox.Job{Image: img, Args: []string{"true"}, Limits: ok}
			c.mod(&job)
			res, err := sb.Run(context.Background(), job)
			if !errors.Is(err, c.want) || res != nil {
				t.Fatalf("res %v err %v, want %v", res, err, c.want)
			}
			t.Logf("refused: %v", err)
			if jobs, _ := os.ReadDir(filepath.Join(sharedDir, "jobs")); len(jobs) != 0 {
				t.Errorf("job dirs left: %v", jobs)
			}
			ctx := namespaces.WithNamespace(context.Background(), testNS)
			if list, _ := sb.Client().Containers(ctx, notAnchor); len(list) != 0 {
				t.Errorf("%d containers left", len(list))
			}
		})
	}
}

// A configured runtime that is not installed is refused at New.
func TestRuntimeUnavailable(t *testing.T) {
	needDaemon(t)
	for _, rt := range sandbox.Runtimes {
		if installed(rt) {
			continue
		}
		cfg := testConfig(t.TempDir())
		cfg.Runtime = rt
		_, err := sandbox.New(context.Background(), cfg, testLogger(t))
		if !errors.Is(err, sandbox.ErrRuntimeUnavailable) {
			t.Fatalf("%s: err %v, want ErrRuntimeUnavailable", rt, err)
		}
		t.Logf("refused: %v", err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Runtime = "kata"
	if _, err := sandbox.New(context.Background(), cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), "runtime") {
		t.Fatalf("unknown runtime: err %v", err)
	}
}

// Without user namespaces (userns: off) the same isolation holds.
func TestUserNSOff(t *testing.T) {
	needDaemon(t)
	cfg := testConfig(t.TempDir())
	cfg.UserNS = "off"
	sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	tarball, _ := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	img, err := sb.ImportImage(context.Background(), bytes.NewReader(tarball), "")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img.Name, Stdout: &out,
		Args:   []string{"sh", "-c", "cat /proc/self/uid_map; grep CapEff /proc/self/status; touch /x 2>/dev/null || echo ro; echo hi > /out/f && echo out-ok"},
		Limits: sandbox.Limits{CPUMillis: 100, MemoryBytes: 16 << 20, WallClock: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(out.String()), " ")
	if !strings.Contains(got, "0 0 4294967295") || !strings.Contains(got, "CapEff: 0000000000000000") || !strings.Contains(got, "ro out-ok") {
		t.Errorf("job saw %q", got)
	}
	if res.Output.Files != 1 {
		t.Errorf("output %+v", res.Output)
	}
}

func TestCollectImages(t *testing.T) {
	needDaemon(t)
	cfg := testConfig(t.TempDir())
	cfg.Namespace = testNS + "-gc"
	sb, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sb.Close()
		cleanNamespace(sb.Client(), cfg.Namespace)
	}()
	tarball, _ := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	img, err := sb.ImportImage(context.Background(), bytes.NewReader(tarball), "")
	if err != nil {
		t.Fatal(err)
	}
	removed, err := sb.CollectImages(context.Background())
	if err != nil || len(removed) != 0 {
		t.Fatalf("collect under limits removed %v, %v", removed, err)
	}
	cfg.ImageCacheBytes = 1 // everything is over
	sb2, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	// New reconciled and collected already.
	ctx := namespaces.WithNamespace(context.Background(), cfg.Namespace)
	if _, err := sb2.Client().ImageService().Get(ctx, img.Name); err == nil {
		t.Errorf("image %s kept over the cache size", img.Name)
	}
	// By age: an image unused for longer than image_cache_age goes.
	cfg.ImageCacheBytes = 1 << 40
	cfg.ImageCacheAge = time.Nanosecond
	sb3, err := sandbox.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sb3.Close()
	if _, err := sb3.ImportImage(context.Background(), bytes.NewReader(tarball), ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	removed, err = sb3.CollectImages(context.Background())
	if err != nil || len(removed) != 1 || removed[0] != img.Name {
		t.Errorf("collect by age removed %v, %v", removed, err)
	}
	// The snapshots of the image go with it.
	n := 0
	sb2.Client().SnapshotService("overlayfs").Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d snapshots left after the image was collected", n)
	}
}

// Pulling needs a registry; an unreachable one is a clear ErrBadImage.
func TestPullUnreachableRegistry(t *testing.T) {
	sb, _ := newSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := sb.Pull(ctx, "127.0.0.1:1/nothing/here:latest")
	if !errors.Is(err, sandbox.ErrBadImage) {
		t.Fatalf("err %v, want ErrBadImage", err)
	}
	t.Logf("refused: %v", err)
}

// Pull by reference from a registry (an in-process one here), then run.
func TestPullAndRun(t *testing.T) {
	sb, _ := newSandbox(t)
	reg, err := sandboxtest.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := sb.Pull(ctx, reg.Ref)
	if err != nil {
		t.Fatalf("pull %s: %v", reg.Ref, err)
	}
	if img.Digest != reg.ManifestDigest || img.Name != reg.Ref {
		t.Errorf("pulled %+v, want digest %s", img, reg.ManifestDigest)
	}
	res, out, _ := run(t, sb, img.Name, sandbox.Limits{}, "echo", "pulled")
	if out != "pulled\n" || res.ExitCode != 0 {
		t.Errorf("out %q exit %d", out, res.ExitCode)
	}
	again, err := sb.Pull(ctx, reg.Ref)
	if err != nil || !again.Cached {
		t.Errorf("second pull: %+v %v", again, err)
	}
}
