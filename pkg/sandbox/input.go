package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// Bounds on a job's input directory besides its byte cap (Job.InputCap):
// entries (files and directories) and nesting depth.
const (
	maxInputEntries = 100_000
	maxInputDepth   = 64
)

// Modes of the job's copy of its input: root-owned on the host, so that a
// remapped job root reads it through the "other" bits.
const (
	inputDirMode  = 0o755
	inputFileMode = 0o644
)

// inputStats summarises an input directory.
type inputStats struct {
	Files, Dirs int
	Bytes       int64
}

// walkInput checks the tree at dir: it must be a directory holding only
// directories and regular files (no symlinks, devices, FIFOs or sockets),
// at most maxInputEntries entries, maxInputDepth deep and limit bytes of
// file data in all. dir itself may be reached through a symlink (the caller
// names it); nothing inside it is followed. Every problem wraps ErrBadJob.
//
// With a non-nil visit, walkInput calls it for each entry in lexical order,
// parents first: with f nil for a directory, or with the opened file and
// its size (as checked) for a regular file. Files are opened through an
// os.Root with O_NOFOLLOW and checked again after the open, so that a tree
// changed during the walk can neither lead outside dir nor slip in a
// non-regular file.
func walkInput(dir string, limit int64, visit func(rel string, f *os.File, size int64) error) (inputStats, error) {
	var st inputStats
	entries := 0
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: input dir %s: %s", ErrBadJob, dir, fmt.Sprintf(format, a...))
	}
	info, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return st, bad("does not exist")
		}
		return st, fmt.Errorf("%w: input dir: %v", ErrBadJob, err)
	}
	if !info.IsDir() {
		return st, bad("not a directory")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, fmt.Errorf("%w: input dir: %v", ErrBadJob, err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return bad("%v", err)
		}
		if p == "." {
			return nil
		}
		if entries++; entries > maxInputEntries {
			return bad("more than %d entries", maxInputEntries)
		}
		switch t := d.Type(); {
		case t.IsDir():
			if depth(p) > maxInputDepth {
				return bad("%s: nested deeper than %d", p, maxInputDepth)
			}
			st.Dirs++
			if visit != nil {
				return visit(p, nil, 0)
			}
			return nil
		case t&fs.ModeSymlink != 0:
			return bad("%s: a symlink (only regular files and directories are accepted)", p)
		case !t.IsRegular():
			return bad("%s: not a regular file (%s)", p, t.Type())
		}
		st.Files++
		fi, err := d.Info()
		if err != nil {
			return bad("%v", err)
		}
		if fi.Size() > limit-st.Bytes {
			return bad("files larger than the cap of %s", FormatSize(limit))
		}
		st.Bytes += fi.Size()
		if visit == nil {
			return nil
		}
		f, err := root.OpenFile(filepath.FromSlash(p), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			return bad("%v", err)
		}
		defer f.Close()
		now, err := f.Stat()
		if err != nil {
			return bad("%v", err)
		}
		if !now.Mode().IsRegular() || !os.SameFile(fi, now) || now.Size() != fi.Size() {
			return bad("%s changed while being read", p)
		}
		return visit(p, f, fi.Size())
	})
	return st, err
}

func depth(p string) int {
	n := 1
	for p = path.Dir(p); p != "."; p = path.Dir(p) {
		n++
	}
	return n
}

// copyInput copies the tree at src (checked by walkInput) to dst, a new
// directory: directories 0755 and files 0644, owned by root, whatever the
// source's modes and owners. The job's /in is a read-only bind mount of
// dst. Copying rather than binding src itself means the caller's files are
// never chmodded or exposed by inode, a symlink or rename inside src after
// the check cannot widen what the job sees, and the job's view cannot
// change under it while it runs. The price is one copy of the inputs per
// job, on the state directory's disk (not the job's tmpfs), bounded by limit.
func copyInput(src, dst string, limit int64) (inputStats, error) {
	if err := mkdirMode(dst); err != nil {
		return inputStats{}, fmt.Errorf("input copy: %w", err)
	}
	return walkInput(src, limit, func(rel string, f *os.File, size int64) error {
		to := filepath.Join(dst, filepath.FromSlash(rel))
		if f == nil {
			if err := mkdirMode(to); err != nil {
				return fmt.Errorf("input copy: %w", err)
			}
			return nil
		}
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, inputFileMode)
		if err != nil {
			return fmt.Errorf("input copy: %w", err)
		}
		n, err := io.Copy(out, io.LimitReader(f, size))
		if err == nil && n != size {
			err = fmt.Errorf("%w: input dir %s: %s changed while being read", ErrBadJob, src, rel)
		}
		if err == nil {
			err = out.Chmod(inputFileMode) // whatever the umask
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil && !errors.Is(err, ErrBadJob) {
			err = fmt.Errorf("input copy %s: %w", rel, err)
		}
		return err
	})
}

func mkdirMode(p string) error {
	if err := os.Mkdir(p, 0o700); err != nil {
		return err
	}
	return os.Chmod(p, inputDirMode)
}
