//go:build integration

package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSandboxRunMemoryMeansSubmitMemory: `sandbox run --memory 512Mi` puts
// the same bytes in the job's cgroup as `submit --memory 512Mi` asks of a
// seller. The job prints its memory cgroup and waits; the test reads the
// limit from the host while it runs.
func TestSandboxRunMemoryMeansSubmitMemory(t *testing.T) {
	tarball, data := sandboxCLIEnv(t)
	for _, tt := range []struct {
		flag string
		want int64
	}{{"512Mi", 512 << 20}, {"512M", 512_000_000 &^ 4095}} { // the kernel rounds down to pages
		w := &cgroupLimitWriter{}
		var errb strings.Builder
		code := Run(context.Background(), []string{"--data-dir", data, "sandbox", "run", "--image", tarball, "--memory", tt.flag, "--cpus", "500m", "--",
			"sh", "-c", "grep :memory: /proc/self/cgroup; sleep 1"}, w, &errb)
		if code != 0 || w.err != nil {
			t.Fatalf("sandbox run --memory %s: exit %d, %v: %s", tt.flag, code, w.err, errb.String())
		}
		if w.limit != tt.want {
			t.Errorf("sandbox run --memory %s: cgroup limit %d, want %d", tt.flag, w.limit, tt.want)
		}
	}
}

// cgroupLimitWriter reads the memory limit of the cgroup v1 path written to
// it ("4:memory:/ns/container") as soon as it sees it.
type cgroupLimitWriter struct {
	buf   []byte
	limit int64
	err   error
}

func (w *cgroupLimitWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	line, _, ok := strings.Cut(string(w.buf), "\n")
	if !ok || w.limit != 0 || w.err != nil {
		return len(p), nil
	}
	_, path, ok := strings.Cut(line, ":memory:")
	if !ok {
		w.err = fmt.Errorf("no memory cgroup in %q", line)
		return len(p), nil
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes"))
	if err != nil {
		w.err = err
		return len(p), nil
	}
	w.limit, w.err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return len(p), nil
}
