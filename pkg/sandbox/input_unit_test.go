package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWalkInputValidates(t *testing.T) {
	good := func(t *testing.T) string {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "a", "b"), 0o700)
		os.WriteFile(filepath.Join(d, "top"), []byte("12345"), 0o600)
		os.WriteFile(filepath.Join(d, "a", "b", "deep"), []byte("678"), 0o000)
		os.WriteFile(filepath.Join(d, "empty"), nil, 0o644)
		return d
	}
	st, err := walkInput(good(t), 8, nil)
	if err != nil || st != (inputStats{Files: 3, Dirs: 2, Bytes: 8}) {
		t.Fatalf("good tree: %+v %v", st, err)
	}
	// A symlink naming the directory itself is the caller's choice: followed.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(good(t), link)
	if _, err := walkInput(link, 8, nil); err != nil {
		t.Errorf("input dir through a symlink: %v", err)
	}
	deep := t.TempDir()
	p := deep
	for i := 0; i <= maxInputDepth; i++ {
		p = filepath.Join(p, "d")
	}
	os.MkdirAll(p, 0o755)

	for name, c := range map[string]struct {
		dir   func(t *testing.T) string
		limit int64
		msg   string
	}{
		"one byte over": {good, 7, "larger than the cap"},
		"missing":       {func(t *testing.T) string { return filepath.Join(t.TempDir(), "x") }, 1 << 20, "does not exist"},
		"a file": {func(t *testing.T) string {
			return filepath.Join(good(t), "top")
		}, 1 << 20, "not a directory"},
		"symlink out": {func(t *testing.T) string {
			d := good(t)
			os.Symlink("/etc/passwd", filepath.Join(d, "a", "pw"))
			return d
		}, 1 << 20, "a/pw: a symlink"},
		"dangling symlink": {func(t *testing.T) string {
			d := good(t)
			os.Symlink("nowhere", filepath.Join(d, "zz"))
			return d
		}, 1 << 20, "symlink"},
		"fifo": {func(t *testing.T) string {
			d := good(t)
			syscall.Mkfifo(filepath.Join(d, "p"), 0o600)
			return d
		}, 1 << 20, "p: not a regular file"},
		"device": {func(t *testing.T) string {
			d := good(t)
			if err := syscall.Mknod(filepath.Join(d, "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
				t.Skipf("mknod: %v", err)
			}
			return d
		}, 1 << 20, "not a regular file"},
		"too deep": {func(t *testing.T) string { return deep }, 1 << 20, "nested deeper"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := walkInput(c.dir(t), c.limit, nil)
			if !errors.Is(err, ErrBadJob) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err %v, want ErrBadJob saying %q", err, c.msg)
			}
		})
	}
}

func TestCopyInputModes(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a"), 0o700)
	os.WriteFile(filepath.Join(src, "a", "f"), []byte("data"), 0o600)
	os.WriteFile(filepath.Join(src, "x"), []byte("exec"), 0o700)
	os.Chmod(filepath.Join(src, "a"), 0o700)
	dst := filepath.Join(t.TempDir(), "in")
	st, err := copyInput(src, dst, 100)
	if err != nil || st.Files != 2 || st.Dirs != 1 || st.Bytes != 8 {
		t.Fatalf("copy: %+v %v", st, err)
	}
	for p, want := range map[string]os.FileMode{"": os.ModeDir | 0o755, "a": os.ModeDir | 0o755, "a/f": 0o644, "x": 0o644} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil || fi.Mode() != want {
			t.Errorf("copy of %q: %v %v, want %v", p, err, fi.Mode(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "a", "f")); string(b) != "data" {
		t.Errorf("copied content %q", b)
	}
	// The source is untouched.
	if fi, _ := os.Stat(filepath.Join(src, "a", "f")); fi.Mode().Perm() != 0o600 {
		t.Errorf("source mode changed to %v", fi.Mode())
	}
	// A refused tree is refused by the copy as well.
	os.Symlink("/etc/passwd", filepath.Join(src, "pw"))
	if _, err := copyInput(src, filepath.Join(t.TempDir(), "in"), 100); !errors.Is(err, ErrBadJob) {
		t.Errorf("copy of a tree with a symlink: %v", err)
	}
}
