//go:build integration

package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"
)

// installed reports whether runtime's binary is on this machine.
func installed(rt string) bool {
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		if _, err := os.Stat(filepath.Join(d, rt)); err == nil {
			return true
		}
	}
	return false
}

// runc runs the probe job; a runtime that is not installed is reported
// unavailable, never as working; every runtime reported working runs a job
// (TestJobRuntime).
func TestProbeRuntimes(t *testing.T) {
	sb, _ := newSandbox(t)
	ok, failed := sb.ProbeRuntimes(context.Background())
	t.Logf("ok %v failed %v", ok, failed)
	if failed["runc"] != nil {
		t.Errorf("runc: %v", failed["runc"])
	}
	for _, rt := range sandbox.Runtimes {
		if !installed(rt) && !errors.Is(failed[rt], sandbox.ErrRuntimeUnavailable) {
			t.Errorf("%s is not installed, probe says %v", rt, failed[rt])
		}
		if (failed[rt] == nil) != slices.Contains(ok, rt) {
			t.Errorf("%s: in ok %v and failed %v", rt, ok, failed[rt])
		}
	}
}

// A job runs under the runtime it names, of those that can run here:
// containerd records the runtime binary for its container, and under runsc
// the job sees gVisor's kernel, not the host's.
func TestJobRuntime(t *testing.T) {
	sb, img := newSandbox(t)
	host, _ := os.ReadFile("/proc/version")
	_, failed := sb.ProbeRuntimes(context.Background())
	for _, rt := range sandbox.Runtimes {
		t.Run(rt, func(t *testing.T) {
			if err := failed[rt]; err != nil {
				if rt == "runc" {
					t.Fatalf("runc cannot run jobs: %v", err)
				}
				t.Skipf("%s cannot run jobs here: %v", rt, err)
			}
			var out bytes.Buffer
			binary := make(chan string, 1)
			done := make(chan struct{})
			go func() { // the container's runtime, read from containerd while it runs
				defer close(binary)
				ctx := namespaces.WithNamespace(context.Background(), testNS)
				for {
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
					list, _ := sb.Client().Containers(ctx, `labels."blackbox.sandbox/job"==rt-`+rt)
					for _, c := range list {
						info, err := c.Info(ctx)
						if err != nil {
							continue
						}
						name := "runc" // no options: the shim's default binary
						if info.Runtime.Options != nil {
							v, err := typeurl.UnmarshalAny(info.Runtime.Options)
							if o, ok := v.(*options.Options); err == nil && ok && o.BinaryName != "" {
								name = filepath.Base(o.BinaryName)
							}
						}
						binary <- info.Runtime.Name + " " + name
						return
					}
				}
			}()
			res, err := sb.Run(context.Background(), sandbox.Job{ID: "rt-" + rt, Image: img, Runtime: rt, Stdout: &out,
				Args:   []string{"sh", "-c", "cat /proc/version; echo x > /out/f; sleep 1"},
				Limits: sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute}})
			close(done)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 || res.Runtime != rt || res.Output.Files != 1 {
				t.Fatalf("result %+v", res)
			}
			assertNoTrace(t, sb, res.Container)
			if got := <-binary; got != "io.containerd.runc.v2 "+rt {
				t.Errorf("container ran under %q, want io.containerd.runc.v2 %s", got, rt)
			}
			sawHost := strings.TrimSpace(out.String()) == strings.TrimSpace(string(host))
			if rt == "runsc" && sawHost {
				t.Errorf("under runsc the job saw the host kernel: %s", out.String())
			}
			if rt != "runsc" && !sawHost {
				t.Errorf("under %s the job saw %q, not the host kernel", rt, out.String())
			}
			t.Logf("%s: %s cpu %s peak %d", rt, strings.TrimSpace(out.String()), res.CPUTime, res.PeakMemory)
		})
	}
	_, err := sb.Run(context.Background(), sandbox.Job{Image: img, Runtime: "kata",
		Limits: sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute}})
	if !errors.Is(err, sandbox.ErrRuntimeUnavailable) {
		t.Errorf("unknown runtime: err %v, want ErrRuntimeUnavailable", err)
	}
}
