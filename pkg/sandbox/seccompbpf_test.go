//go:build integration

package sandbox_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// The first crun job compiles its seccomp profile; the next ones load the
// program crun wrote for it (run.oci.seccomp_bpf_data). Both deny what
// the profile denies: unshare(2) without CAP_SYS_ADMIN, which a job's root
// in its user namespace could otherwise call.
func TestCrunSeccompFromCache(t *testing.T) {
	sb, img := newSandbox(t)
	probeOnce.Do(func() { _, probeFailed = sb.ProbeRuntimes(t.Context()) })
	if err := probeFailed["crun"]; err != nil {
		t.Skipf("crun cannot run jobs here: %v", err)
	}
	lim := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: 30 * time.Second}
	for i := 0; i < 2; i++ {
		_, out, _ := runIn(t, sb, img, "crun", lim, "sh", "-c", `grep -E '^Seccomp(_filters)?:' /proc/self/status; unshare -U true && echo unshared || echo denied`)
		if !strings.Contains(out, "Seccomp:\t2") || !strings.Contains(out, "denied") {
			t.Fatalf("job %d: %q: want seccomp mode 2 and unshare denied", i, out)
		}
		if n := sb.CachedSeccompPrograms(); n == 0 {
			t.Fatalf("job %d: no compiled program kept", i)
		}
	}
}

// The program crun compiled is kept in the state dir: a Sandbox started
// again on it gives the next crun job that program (no compile); a
// corrupt file is discarded, crun compiles again and the file is rewritten.
func TestCrunSeccompCacheSurvivesRestart(t *testing.T) {
	sb0, _ := newSandbox(t)
	probeOnce.Do(func() { _, probeFailed = sb0.ProbeRuntimes(t.Context()) })
	if err := probeFailed["crun"]; err != nil {
		t.Skipf("crun cannot run jobs here: %v", err)
	}
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	cfg := testConfig(stateDir)
	cfg.Namespace = testNS + "-bpf"
	t.Cleanup(func() { cleanNamespace(nil, cfg.Namespace) })
	lim := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: 30 * time.Second}
	// runOnce starts a Sandbox on stateDir, runs one crun job and closes
	// it; it returns the programs loaded at start and the jobs given one.
	runOnce := func() (loaded int, fromCache int64) {
		t.Helper()
		sb, err := sandbox.New(t.Context(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		loaded = sb.CachedSeccompPrograms()
		img, err := sb.ImportImage(t.Context(), bytes.NewReader(tarball), sandboxtest.Digest(tarball))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := sb.Run(t.Context(), sandbox.Job{Image: img.Name, Runtime: "crun", Limits: lim, Stdout: &out,
			Args: []string{"sh", "-c", `grep -E '^Seccomp:' /proc/self/status; unshare -U true && echo unshared || echo denied`}})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("crun job: %+v %v", res, err)
		}
		if !strings.Contains(out.String(), "Seccomp:\t2") || !strings.Contains(out.String(), "denied") {
			t.Fatalf("%q: want seccomp mode 2 and unshare denied", out.String())
		}
		return loaded, sb.SeccompFromCache()
	}
	kept := func() []string {
		m, _ := filepath.Glob(filepath.Join(stateDir, "seccomp", "*"))
		return m
	}

	if loaded, hits := runOnce(); loaded != 0 || hits != 0 {
		t.Fatalf("first start: %d programs loaded, %d jobs from the cache; want none", loaded, hits)
	}
	files := kept()
	if len(files) != 1 || !strings.HasSuffix(files[0], ".bpf") {
		t.Fatalf("kept files %v, want one program", files)
	}
	if loaded, hits := runOnce(); loaded != 1 || hits != 1 {
		t.Fatalf("restart: %d programs loaded, %d jobs from the cache; want 1 and 1", loaded, hits)
	}

	good, _ := os.ReadFile(files[0])
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xff
	os.WriteFile(files[0], bad, 0o600)
	if loaded, hits := runOnce(); loaded != 0 || hits != 0 {
		t.Fatalf("corrupt file: %d programs loaded, %d jobs from the cache; want none", loaded, hits)
	}
	if again, _ := os.ReadFile(files[0]); !bytes.Equal(again, good) {
		t.Errorf("the program crun compiled again was not kept as before (%d bytes, was %d)", len(again), len(good))
	}
}
