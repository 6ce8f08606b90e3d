package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSandboxRunRefusesTyposBeforeConnecting: `sandbox run` with an --image
// path that does not exist, or an unknown --runtime, says so before it
// connects to containerd (here there is none: connecting would fail with
// "containerd unavailable" instead), with submit's words for the image; an
// image reference and a known runtime pass on to the connection.
func TestSandboxRunRefusesTyposBeforeConnecting(t *testing.T) {
	data := t.TempDir()
	t.Setenv("BLACKBOX_SANDBOX_ADDRESS", filepath.Join(t.TempDir(), "no-containerd.sock"))
	file := filepath.Join(t.TempDir(), "job.tar")
	if err := os.WriteFile(file, []byte("not looked at"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing image file", []string{"--image", "./jbo.tar"}, `--image "./jbo.tar": no such file (and not an image reference`},
		{"unknown runtime", []string{"--image", file, "--runtime", "kata"}, `--runtime: runtime unavailable: unknown runtime "kata" (want one of runc, crun, runsc)`},
		{"a reference and a known runtime", []string{"--image", "docker.io/library/busybox:1.36", "--runtime", "crun"}, "containerd unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{"--data-dir", data, "sandbox", "run"}, c.args...), "--", "true")
			code, _, errOut := run(t, args...)
			if code != 1 || !strings.Contains(errOut, c.want) {
				t.Fatalf("code %d, stderr %q, want %q", code, errOut, c.want)
			}
			if c.want != "containerd unavailable" && strings.Contains(errOut, "containerd") {
				t.Fatalf("connected before refusing: %q", errOut)
			}
		})
	}
}
