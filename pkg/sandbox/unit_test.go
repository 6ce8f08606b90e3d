package sandbox

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for key, mod := range map[string]func(*Config){
		"address":         func(c *Config) { c.Address = "" },
		"namespace":       func(c *Config) { c.Namespace = "a/b" },
		"runtime":         func(c *Config) { c.Runtime = "kata" },
		"userns":          func(c *Config) { c.UserNS = "maybe" },
		"max_image_bytes": func(c *Config) { c.MaxImageBytes = 0 },
		"output_cap":      func(c *Config) { c.OutputCap = -1 },
		"default_pids":    func(c *Config) { c.DefaultPids = 0 },
		"image_cache_age": func(c *Config) { c.ImageCacheAge = -time.Second },
		"shim_group_jobs": func(c *Config) { c.ShimGroupJobs = 0 },
		"probe_timeout":   func(c *Config) { c.ProbeTimeout = 0 },
	} {
		c := DefaultConfig()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: err %v, want one naming the key", key, err)
		}
	}
}

func TestCapWriter(t *testing.T) {
	var buf bytes.Buffer
	w := &capWriter{w: &buf, cap: 10}
	for _, s := range []string{"hello", "world", "again"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %d %v", n, err)
		}
	}
	if buf.String() != "helloworld" || w.n != 15 || !w.truncated() {
		t.Errorf("got %q n=%d truncated=%v", buf.String(), w.n, w.truncated())
	}
	exact := &capWriter{w: io.Discard, cap: 5}
	exact.Write([]byte("12345"))
	if exact.truncated() {
		t.Error("exactly the cap reported as truncated")
	}
}

func TestTarDirReproducible(t *testing.T) {
	mk := func() string {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "sub"), 0o755)
		os.WriteFile(filepath.Join(d, "sub", "a"), []byte("A"), 0o644)
		os.WriteFile(filepath.Join(d, "b"), []byte("BB"), 0o600)
		os.Symlink("/etc/passwd", filepath.Join(d, "l"))
		return d
	}
	d1, d2 := mk(), mk()
	time.Sleep(10 * time.Millisecond)
	os.Chtimes(filepath.Join(d2, "b"), time.Now(), time.Now())
	o1, err := tarDir(d1, nil)
	if err != nil {
		t.Fatal(err)
	}
	o2, _ := tarDir(d2, nil)
	if o1 != o2 || o1.Files != 2 {
		t.Errorf("%+v vs %+v", o1, o2)
	}
}

// The crun wrapper passes every call but create straight to crun, with its
// arguments as they were (create needs root: TestJobRuntime runs it).
func TestCrunScriptPassesCalls(t *testing.T) {
	dir := t.TempDir()
	p, err := writeWrapper(dir, "crun", crunScript("/bin/echo"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "--root", "/run/x y", "delete", "it's").CombinedOutput()
	if err != nil || string(out) != "--root /run/x y delete it's\n" {
		t.Errorf("wrapper ran %q, %v", out, err)
	}
	if again, err := writeWrapper(dir, "crun", crunScript("/bin/echo")); err != nil || again != p {
		t.Errorf("rewrite: %s %v", again, err)
	}
}

// TestTailsWaitLooksAtOnce: once the job has ended (wait), the log files
// are looked at again at once and then every tailEndPoll, not at the next
// poll of a running job (an hour here: at 100 ms, every market job waited
// 50 ms on average for its streams to be declared done).
func TestTailsWaitLooksAtOnce(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{logStdout, logStderr} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errs bytes.Buffer
	tl := startTailsEvery(dir, &out, &errs, time.Hour)
	defer tl.halt()
	// The logger's last bytes and its done file, after the tails' first
	// look (which found neither).
	time.Sleep(50 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, logStdout), []byte("the end\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, doneFile), []byte("8 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !tl.wait(time.Minute) {
		t.Fatal("wait did not see the done file (it waited for the running job's poll)")
	}
	if out.String() != "the end\n" || errs.Len() != 0 {
		t.Fatalf("copied stdout %q, stderr %q", out.String(), errs.String())
	}
}
