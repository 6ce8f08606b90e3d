//go:build integration

package sandbox_test

import (
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
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
