//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
	"github.com/containerd/containerd/namespaces"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The last window of a seller crash: the job ended, its end was recorded
// and its task deleted, and the process died before its caller had the
// Result. The next Sandbox keeping the job adopts the container without a
// task, and Reattach returns what an undisturbed run returns: the exit
// code, the usage recorded, every line of both streams and the same /out.
// A job whose end file is corrupt or missing is not adopted (removed, as
// before), with a log line saying why; nothing of any job is left.
func TestTaskDeletedBeforeResultSurvivesCrash(t *testing.T) {
	cfg, sb1, img := loggedSandbox(t, "-endfile")
	ctx := context.Background()
	lim := sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: 2 * time.Minute}
	script := "for i in 1 2 3 4 5; do echo line $i; echo err $i >&2; done; echo done > /out/result; mkdir /out/d; echo x > /out/d/y; exit 5"
	type outcome struct {
		res                 *sandbox.Result
		err                 error
		stdout, stderr, out bytes.Buffer
	}
	runJob := func(sb *sandbox.Sandbox, id string) *outcome {
		o := &outcome{}
		o.res, o.err = sb.Run(ctx, sandbox.Job{ID: id, Image: img.Name, Args: []string{"sh", "-c", script}, Limits: lim,
			Stdout: &o.stdout, Stderr: &o.stderr, Output: &o.out})
		return o
	}

	plain := runJob(sb1, "endfile-plain")
	if plain.err != nil || plain.res.ExitCode != 5 {
		t.Fatalf("undisturbed run: %v %+v", plain.err, plain.res)
	}

	dirs := map[string]string{} // job ID → job dir, of the crashed ones
	var mu sync.Mutex
	restore := sandbox.CrashAfterTaskDeleted(func(id, dir string) bool {
		if !strings.HasPrefix(id, "endfile-crash-") {
			return false
		}
		mu.Lock()
		dirs[id] = dir
		mu.Unlock()
		return true
	})
	crashed := map[string]*outcome{}
	for _, id := range []string{"endfile-crash-ok", "endfile-crash-corrupt", "endfile-crash-missing"} {
		o := runJob(sb1, id)
		if !errors.Is(o.err, sandbox.ErrDetached) {
			restore()
			t.Fatalf("%s: %v %+v, want the crash (ErrDetached)", id, o.err, o.res)
		}
		crashed[id] = o
	}
	restore()
	for id, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, sandbox.EndFile)); err != nil {
			t.Fatalf("%s: end file: %v", id, err)
		}
	}
	var recorded struct {
		ExitCode int   `json:"exit_code"`
		CPU      int64 `json:"cpu_ns"`
		Peak     int64 `json:"peak_memory_bytes"`
	}
	if b, err := os.ReadFile(filepath.Join(dirs["endfile-crash-ok"], sandbox.EndFile)); err != nil || json.Unmarshal(b, &recorded) != nil {
		t.Fatalf("end file: %v %q", err, b)
	}
	if err := os.WriteFile(filepath.Join(dirs["endfile-crash-corrupt"], sandbox.EndFile), []byte(`{"version":1,"exit_co`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dirs["endfile-crash-missing"], sandbox.EndFile)); err != nil {
		t.Fatal(err)
	}
	if err := sb1.Close(); err != nil { // its owner lock goes, as in a crash
		t.Fatal(err)
	}

	var logs lockedBuffer
	sb2, err := sandbox.New(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)),
		sandbox.WithKeep(func(id string) bool { return strings.HasPrefix(id, "endfile-") }))
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	if got := sb2.Adopted(ctx); !slices.Equal(got, []string{"endfile-crash-ok"}) {
		t.Fatalf("adopted %v, want [endfile-crash-ok]; log:\n%s", got, logs.String())
	}
	for _, id := range []string{"endfile-crash-corrupt", "endfile-crash-missing"} {
		found := false
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "not adopting a kept job: its task is gone and its end was not recorded") && strings.Contains(l, "job="+id) {
				t.Logf("log: %s", l)
				found = true
			}
		}
		if !found {
			t.Errorf("no log line says why %s was not adopted:\n%s", id, logs.String())
		}
		if _, err := sb2.Reattach(ctx, sandbox.Job{ID: id}); !errors.Is(err, sandbox.ErrNoJob) {
			t.Errorf("%s: reattach %v, want ErrNoJob (removed at New)", id, err)
		}
	}

	got := &outcome{}
	got.res, got.err = sb2.Reattach(ctx, sandbox.Job{ID: "endfile-crash-ok", Stdout: &got.stdout, Stderr: &got.stderr, Output: &got.out})
	if got.err != nil {
		t.Fatalf("reattach: %v", got.err)
	}
	t.Logf("undisturbed: %+v", *plain.res)
	t.Logf("re-attached: %+v", *got.res)
	if got.stdout.String() != plain.stdout.String() || got.stderr.String() != plain.stderr.String() || got.stdout.Len() == 0 {
		t.Errorf("streams: re-attached %q %q, undisturbed %q %q", got.stdout.String(), got.stderr.String(), plain.stdout.String(), plain.stderr.String())
	}
	if !bytes.Equal(got.out.Bytes(), plain.out.Bytes()) || got.res.Output != plain.res.Output || got.res.Output.Files != 2 ||
		got.res.Output.SHA256 != fmt.Sprintf("sha256:%x", sha256.Sum256(got.out.Bytes())) {
		t.Errorf("/out: re-attached %+v (%d bytes), undisturbed %+v (%d bytes)", got.res.Output, got.out.Len(), plain.res.Output, plain.out.Len())
	}
	r, p := got.res, plain.res
	if r.ExitCode != p.ExitCode || r.Reason != p.Reason || r.StdoutBytes != p.StdoutBytes || r.StderrBytes != p.StderrBytes ||
		r.StdoutTruncated || r.StderrTruncated || r.CPUTime <= 0 || r.PeakMemory <= 0 || r.Wall <= 0 || r.Runtime != p.Runtime {
		t.Errorf("result: re-attached %+v, undisturbed %+v", *r, *p)
	}
	if r.ExitCode != recorded.ExitCode || int64(r.CPUTime) != recorded.CPU || r.PeakMemory != recorded.Peak {
		t.Errorf("result %+v is not the recorded end %+v", *r, recorded)
	}
	// What the first process saw before it died is a prefix of the whole.
	if o := crashed["endfile-crash-ok"]; !strings.HasPrefix(got.stdout.String(), o.stdout.String()) {
		t.Errorf("first process saw %q", o.stdout.String())
	}
	list, err := sb2.Client().Containers(namespaces.WithNamespace(ctx, cfg.Namespace))
	if err != nil || len(list) != 0 {
		t.Errorf("containers left: %d (%v)", len(list), err)
	}
	if left, _ := os.ReadDir(filepath.Join(cfg.StateDir, "jobs")); len(left) != 0 {
		t.Errorf("job dirs left: %v", left)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), cfg.StateDir) {
		t.Errorf("a scratch mount under %s is still there", cfg.StateDir)
	}
}

// BenchmarkSandboxJobLogged is BenchmarkSandboxJob with the streams going
// to files (Config.LogBinary), as the daemon runs jobs: the path that
// records each job's end before deleting its task.
func BenchmarkSandboxJobLogged(b *testing.B) {
	needDaemon(b)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b.TempDir())
	cfg.Namespace = testNS + "-logged"
	cfg.LogBinary = exe
	defer cleanNamespace(nil, cfg.Namespace)
	ctx := context.Background()
	sb, err := sandbox.New(ctx, cfg, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	tarball, err := sandboxtest.BusyboxImage(sandboxtest.DockerArchive)
	if err != nil {
		b.Fatal(err)
	}
	img, err := sb.ImportImage(ctx, bytes.NewReader(tarball), sandboxtest.Digest(tarball))
	if err != nil {
		b.Fatal(err)
	}
	runTrivial(b, sb, img.Name)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runTrivial(b, sb, img.Name)
	}
}
