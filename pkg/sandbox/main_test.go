//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// The integration tests need root and containerd. BLACKBOX_TEST_CONTAINERD
// names a running daemon's socket (deploy/dev/test.sh sets it); otherwise
// TestMain starts a private containerd of its own. Without root or the
// containerd binary they skip, saying why, except under CI=true where they
// fail.
var (
	daemonAddr string // containerd socket, "" when unavailable
	skipReason string
	testNS     = fmt.Sprintf("bbtest-%d", os.Getpid())
)

func TestMain(m *testing.M) {
	if sandbox.IsLogger() { // a job's logger (LogBinary): this binary re-run by the shim
		os.Exit(sandbox.LoggerMain())
	}
	flag.Parse()
	if os.Getenv(helperEnv) != "" {
		crashHelper() // never returns
	}
	code := m.Run()
	printRuntimeRuns()
	if daemonAddr != "" {
		cleanupNamespace()
	}
	stopDaemon()
	os.Exit(code)
}

var (
	daemonOnce sync.Once
	stopDaemon = func() {}
)

func setupDaemon() (stop func()) {
	stop = func() {}
	if a := os.Getenv("BLACKBOX_TEST_CONTAINERD"); a != "" {
		daemonAddr = a
		return
	}
	if testing.Short() {
		skipReason = "-short: no containerd"
		return
	}
	if os.Geteuid() != 0 {
		skipReason = "needs root to run containerd (or set BLACKBOX_TEST_CONTAINERD)"
		return
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		skipReason = "containerd not installed (deploy/dev/containerd.sh install)"
		return
	}
	dir, err := os.MkdirTemp("", "bbsb-ctrd-")
	if err != nil {
		skipReason = err.Error()
		return
	}
	os.Chmod(dir, 0o711) // remapped job roots walk through it to their rootfs
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600)
	logf, _ := os.Create(filepath.Join(dir, "containerd.log"))
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		skipReason = "start containerd: " + err.Error()
		return
	}
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		// Snapshots are unmounted by then; keep the dir if something is still mounted.
		os.RemoveAll(dir)
	}
	for i := 0; i < 150; i++ {
		if c, err := containerd.New(sock, containerd.WithTimeout(time.Second)); err == nil {
			_, err = c.Version(context.Background())
			c.Close()
			if err == nil {
				daemonAddr = sock
				return stop
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	skipReason = "private containerd did not answer; see " + filepath.Join(dir, "containerd.log")
	return stop
}

// needDaemon skips (or fails under CI=true) when there is no containerd.
func needDaemon(t testing.TB) {
	t.Helper()
	// Started on first need, so that fuzz workers and -run of unit tests
	// never start a daemon.
	daemonOnce.Do(func() { stopDaemon = setupDaemon() })
	if daemonAddr != "" {
		return
	}
	if testing.Short() {
		t.Skip("-short: the fast tier runs without containerd")
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("containerd unavailable under CI: %s", skipReason)
	}
	t.Skip(skipReason)
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(stateDir string) sandbox.Config {
	cfg := sandbox.DefaultConfig()
	cfg.Address = daemonAddr
	cfg.Namespace = testNS
	cfg.StateDir = stateDir
	// Tests that count what is in the namespace run without the shared
	// shim's anchor; the package's shared Sandbox (newSandbox: the
	// containment tests and the benchmarks) runs with it, as a node does.
	cfg.SharedShim = false
	return cfg
}

var (
	shared     *sandbox.Sandbox
	sharedImg  sandbox.Image
	sharedOnce sync.Once
	sharedErr  error
	sharedDir  string
)

// newSandbox returns the package's shared Sandbox with the busybox image
// imported.
func newSandbox(t testing.TB) (*sandbox.Sandbox, string) {
	t.Helper()
	needDaemon(t)
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "bbsb-state-")
		if sharedErr != nil {
			return
		}
		cfg := testConfig(sharedDir)
		cfg.SharedShim = true
		shared, sharedErr = sandbox.New(context.Background(), cfg, testLogger(t))
		if sharedErr != nil {
			return
		}
		var tarball []byte
		tarball, sharedErr = sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
		if sharedErr != nil {
			return
		}
		sharedImg, sharedErr = shared.ImportImage(context.Background(), bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	})
	if sharedErr != nil {
		t.Fatalf("sandbox: %v", sharedErr)
	}
	return shared, sharedImg.Name
}

func cleanupNamespace() {
	if shared != nil {
		shared.Close()
		os.RemoveAll(sharedDir)
	}
	cleanNamespace(nil, testNS)
}

var (
	probeOnce   sync.Once
	probeFailed map[string]error
)

// forRuntimes runs test as a subtest per runtime (runc, crun, runsc): the
// containment tests hold under each. runc must run jobs; another runtime
// the probe finds unusable is skipped saying why, except under CI=true
// when it is installed (deploy/dev installs runsc and crun): then the test
// fails. The subtests run in parallel (one job per runtime at once).
func forRuntimes(t *testing.T, test func(t *testing.T, rt string)) {
	sb, _ := newSandbox(t)
	probeOnce.Do(func() { _, probeFailed = sb.ProbeRuntimes(context.Background()) })
	for _, rt := range sandbox.Runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel() // runsc under ptrace is slow; the runtimes' jobs overlap
			if err := probeFailed[rt]; err != nil {
				if rt == "runc" || (os.Getenv("CI") == "true" && installed(rt)) {
					t.Fatalf("%s cannot run jobs: %v", rt, err)
				}
				t.Skipf("%s cannot run jobs here: %v", rt, err)
			}
			test(t, rt)
		})
	}
}

// run runs a job with generous defaults and returns its result and output.
func run(t *testing.T, sb *sandbox.Sandbox, img string, lim sandbox.Limits, args ...string) (*sandbox.Result, string, string) {
	t.Helper()
	return runIn(t, sb, img, "", lim, args...)
}

// runIn is run under runtime rt ("" for the configured one).
func runIn(t *testing.T, sb *sandbox.Sandbox, img, rt string, lim sandbox.Limits, args ...string) (*sandbox.Result, string, string) {
	t.Helper()
	if lim.CPUMillis == 0 {
		lim.CPUMillis = 1000
	}
	if lim.MemoryBytes == 0 {
		lim.MemoryBytes = 128 << 20
	}
	if lim.WallClock == 0 {
		lim.WallClock = 30 * time.Second
	}
	var stdout, stderr bytes.Buffer
	res, err := sb.Run(context.Background(), sandbox.Job{Image: img, Args: args, Runtime: rt, Limits: lim, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("run %q under %q: %v (stderr %q)", args, rt, err, stderr.String())
	}
	t.Logf("%q: exit %d reason %s cpu %s peak %d oom %d wall %s", args, res.ExitCode, res.Reason, res.CPUTime, res.PeakMemory, res.OOMKills, res.Wall)
	assertNoTrace(t, sb, res.Container)
	return res, stdout.String(), stderr.String()
}

// assertNoTrace checks the host's view after a job: no container, no
// snapshot, no cgroup, no scratch mount, no job directory.
func assertNoTrace(t testing.TB, sb *sandbox.Sandbox, id string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	if _, err := sb.Client().LoadContainer(ctx, id); err == nil {
		t.Errorf("container %s still exists", id)
	}
	if _, err := sb.Client().SnapshotService("overlayfs").Stat(ctx, id); err == nil {
		t.Errorf("snapshot %s still exists", id)
	}
	for _, ctl := range []string{"memory", "pids", "cpu", "cpuacct"} {
		p := filepath.Join("/sys/fs/cgroup", ctl, testNS, id)
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s still exists", p)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), id) {
		t.Errorf("a mount of %s is still there", id)
	}
	if m, _ := filepath.Glob(filepath.Join(sharedDir, "jobs", id)); len(m) > 0 {
		t.Errorf("job dir %v still exists", m)
	}
}

// hostSecret writes a host file no job may read ("host secret") and
// returns its path; it is removed when the test ends.
func hostSecret(t testing.TB) string {
	t.Helper()
	f, err := os.CreateTemp("/var/tmp", "bb-secret-")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("host secret")
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name()
}

func itoa(i int) string { return fmt.Sprint(i) }

func sscanf(s, format string, args ...any) (int, error) { return fmt.Sscanf(s, format, args...) }
