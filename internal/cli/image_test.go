package cli

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImageBuildFromDirectory: the same directory gives the same bytes,
// the image passes the checks a seller applies (checkImage), its layer
// holds the files with their modes plus the sandbox's mount points, and
// bad input writes nothing.
func TestImageBuildFromDirectory(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "app"), 0o755)
	os.WriteFile(filepath.Join(root, "app", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(root, "app", "data"), []byte("x"), 0o600)
	os.Symlink("run.sh", filepath.Join(root, "app", "start"))
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, out := range []string{a, b} {
		if code, stdout, stderr := run(t, "image", "build", "--from", root, "-o", out); code != 0 {
			t.Fatalf("image build: exit %d: %s%s", code, stdout, stderr)
		}
	}
	ra, _ := os.ReadFile(a)
	rb, _ := os.ReadFile(b)
	if !bytes.Equal(ra, rb) {
		t.Error("two builds of the same directory differ")
	}
	if err := checkImage(a); err != nil {
		t.Fatalf("a seller would refuse the image: %v", err)
	}
	layer := layerOf(t, ra)
	for name, mode := range map[string]int64{"app/run.sh": 0o755, "app/data": 0o600, "tmp/": 0o1777, "out/": 0o755, "in/": 0o755, "etc/passwd": 0o644} {
		h, ok := layer[name]
		if !ok {
			t.Errorf("layer lacks %s", name)
		} else if h.Mode != mode || h.Uid != 0 {
			t.Errorf("%s: mode %o uid %d, want %o, root", name, h.Mode, h.Uid, mode)
		}
	}
	if h := layer["app/start"]; h == nil || h.Linkname != "run.sh" {
		t.Errorf("symlink app/start: %+v", h)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", filepath.Join(root, "app", "run.sh")}, "not an executable (ELF) binary"},
		{[]string{"--from", filepath.Join(dir, "nope")}, "no such file"},
		{[]string{"--from", root, "--env", "NOEQUALS"}, "want KEY=VALUE"},
		{[]string{"--from", root, "--workdir", "rel"}, "absolute path"},
	} {
		out := filepath.Join(dir, "bad.tar")
		code, _, stderr := run(t, append([]string{"image", "build", "-o", out}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: wrote %s", tc.args, out)
		}
	}
	if _, err := os.Stat("/bin/ls"); err == nil {
		code, _, stderr := run(t, "image", "build", "--from", "/bin/ls", "-o", filepath.Join(dir, "ls.tar"))
		if code == 0 || !strings.Contains(stderr, "dynamically linked") {
			t.Errorf("a dynamic binary: exit %d, %q", code, stderr)
		}
	}
}

// layerOf returns the headers of a docker archive's one layer by name.
func layerOf(t *testing.T, archive []byte) map[string]*tar.Header {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no layer.tar: %v", err)
		}
		if !strings.HasSuffix(h.Name, "/layer.tar") {
			continue
		}
		raw, _ := io.ReadAll(tr)
		lr := tar.NewReader(bytes.NewReader(raw))
		out := map[string]*tar.Header{}
		var names []string
		for {
			lh, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out[lh.Name] = lh
			names = append(names, lh.Name)
		}
		// A directory comes before what it holds.
		if i, j := slices.Index(names, "app/"), slices.Index(names, "app/run.sh"); i < 0 || i > j {
			t.Errorf("layer order: %v", names)
		}
		return out
	}
}
