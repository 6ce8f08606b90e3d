package sandbox

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// capWriter passes the first cap bytes to w and counts, but drops, the rest,
// so that a job flooding its output neither blocks nor fills the seller.
type capWriter struct {
	mu  sync.Mutex
	w   io.Writer
	cap int64
	n   int64 // bytes the job wrote
}

func (c *capWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.cap - c.n
	c.n += int64(len(p))
	if c.w == nil || room <= 0 {
		return len(p), nil
	}
	q := p
	if int64(len(q)) > room {
		q = q[:room]
	}
	// A failing caller's writer must not block the job: drop and go on.
	c.w.Write(q)
	return len(p), nil
}

func (c *capWriter) truncated() bool {
	_, t := c.count()
	return t
}

// count returns the bytes the job wrote and whether the cap cut them.
func (c *capWriter) count() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.n > c.cap
}

// tarDir writes dir as a reproducible tar to w (nil: discarded) and returns
// its sha256, size and file count. Entries are in lexical order with zero
// times and owners; symlinks are stored, never followed; sockets, devices and
// FIFOs are skipped. The job is dead when this runs, so dir cannot change.
func tarDir(dir string, w io.Writer) (Output, error) {
	if w == nil {
		w = io.Discard
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	tw := tar.NewWriter(cw)
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Name:    filepath.ToSlash(rel),
			Mode:    int64(info.Mode().Perm()),
			ModTime: time.Unix(0, 0),
			Format:  tar.FormatPAX,
		}
		switch {
		case info.Mode().IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case info.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		default:
			return nil
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		files++
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
		if err == nil && n != hdr.Size {
			err = fmt.Errorf("%s changed while archiving", rel)
		}
		return err
	})
	if err != nil {
		return Output{}, err
	}
	if err := tw.Close(); err != nil {
		return Output{}, err
	}
	return Output{SHA256: "sha256:" + hex.EncodeToString(h.Sum(nil)), Bytes: cw.n, Files: files}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
