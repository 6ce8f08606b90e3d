package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
)

// crun compiles a job's seccomp profile (containerd's default: some 400
// rules for three architectures) with libseccomp at every create, a large
// part of a trivial job's time; Debian's crun is built without its cache.
// crun also takes the compiled program itself, in the annotation
// run.oci.seccomp_bpf_data, and then loads it as it is. So the first crun
// job of a profile is compiled by crun as usual, and the sandbox keeps the
// program crun wrote to the job's state directory (seccomp.bpf, where crun
// keeps it to filter the container's later processes): later crun jobs of
// the same profile, under the same crun binary, load those exact bytes.
// The kernel gets the same filter either way; TestCrunSeccompFromCache
// compares the programs.

// crunBPFAnnotation is crun's precompiled seccomp program annotation.
const crunBPFAnnotation = "run.oci.seccomp_bpf_data"

// runtimeRoot is the runc v2 shim's runtime state root (its default); a
// container's runtime state is in runtimeRoot/<namespace>/<id>.
const runtimeRoot = "/run/containerd/runc"

// maxBPF bounds a seccomp program: the kernel takes 4096 instructions of
// 8 bytes at most.
const maxBPF = 4096 * 8

// The programs are kept on disk too (StateDir/seccomp), so that a restart
// does not compile again: a file per program, named by its key (the
// profile's digest and the crun binary's), with a header that repeats both
// digests and the program's own. A file is used only when all of them
// check out; anything else (corrupt, truncated, another crun's) is removed
// with a log line.

// bpfFileMagic is the first line of a kept program's file.
const bpfFileMagic = "blackbox crun seccomp bpf 1"

// bpfCache holds compiled seccomp programs by key (seccompKey).
type bpfCache struct {
	mu   sync.Mutex
	m    map[string]string   // key → the program, base64 as the annotation wants
	bins map[binStamp]string // crun binary → sha256 of its bytes
	dir  string              // where programs are kept; "": in memory only
	log  *slog.Logger
	hits atomic.Int64 // jobs given a kept program
}

// binStamp identifies a binary's version on disk without reading it.
type binStamp struct {
	path        string
	size, mtime int64
	ino         uint64
}

// bpfKey is what a program is kept under: digests of the crun binary and
// of the profile, and the key made of both.
type bpfKey struct{ key, crun, profile string }

// crunDigest is the sha256 of the crun binary at path, read once per
// version of the file.
func (c *bpfCache) crunDigest(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	stamp := binStamp{path: path, size: st.Size(), mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		stamp.ino = sys.Ino
	}
	c.mu.Lock()
	d, ok := c.bins[stamp]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	d = hex.EncodeToString(h.Sum(nil))
	c.mu.Lock()
	if c.bins == nil {
		c.bins = map[binStamp]string{}
	}
	c.bins[stamp] = d
	c.mu.Unlock()
	return d, nil
}

// makeKey is the key of a profile (its digest) compiled by a crun binary
// (its digest).
func makeKey(crun, profile string) string {
	h := sha256.Sum256([]byte(bpfFileMagic + "\x00" + crun + "\x00" + profile))
	return hex.EncodeToString(h[:])
}

// seccompKey names spec's seccomp profile compiled by the crun binary at
// crunPath; a zero key when the spec has no profile.
func (c *bpfCache) seccompKey(spec *oci.Spec, crunPath string) (bpfKey, error) {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return bpfKey{}, nil
	}
	bin, err := c.crunDigest(crunPath)
	if err != nil {
		return bpfKey{}, err
	}
	prof, err := json.Marshal(spec.Linux.Seccomp)
	if err != nil {
		return bpfKey{}, err
	}
	ph := sha256.Sum256(prof)
	k := bpfKey{crun: bin, profile: hex.EncodeToString(ph[:])}
	k.key = makeKey(k.crun, k.profile)
	return k, nil
}

// withCrunBPF is a spec option, after the seccomp profile's: it gives the
// job the profile's compiled program when the cache has it, else it sets
// *capture to the key under which to keep what crun compiles.
func (c *bpfCache) withCrunBPF(crunPath string, capture *bpfKey) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		k, err := c.seccompKey(s, crunPath)
		if err != nil || k.key == "" {
			return nil // crun compiles it, as without the cache
		}
		c.mu.Lock()
		prog, ok := c.m[k.key]
		c.mu.Unlock()
		if !ok {
			*capture = k
			return nil
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[crunBPFAnnotation] = prog
		c.hits.Add(1)
		return nil
	}
}

// validProgram checks the shape of a seccomp program.
func validProgram(b []byte) error {
	if len(b) == 0 || len(b)%8 != 0 || len(b) > maxBPF {
		return fmt.Errorf("seccomp program of %d bytes: not a program", len(b))
	}
	return nil
}

// keep reads the program crun compiled for the created container id (in
// namespace ns), keeps it under k and writes it to the cache dir.
func (c *bpfCache) keep(ns, id string, k bpfKey) error {
	b, err := os.ReadFile(filepath.Join(runtimeRoot, ns, id, "seccomp.bpf"))
	if err != nil {
		return err
	}
	if err := validProgram(b); err != nil {
		return err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[k.key] = base64.StdEncoding.EncodeToString(b)
	c.mu.Unlock()
	if c.dir == "" {
		return nil
	}
	return writeProgram(c.dir, k, b)
}

// encodeProgram is the file of program b kept under k.
func encodeProgram(k bpfKey, b []byte) []byte {
	sum := sha256.Sum256(b)
	head := fmt.Sprintf("%s\ncrun sha256:%s\nprofile sha256:%s\nprogram sha256:%s\n\n", bpfFileMagic, k.crun, k.profile, hex.EncodeToString(sum[:]))
	return append([]byte(head), b...)
}

// decodeProgram parses and checks a kept program's file: its header's
// digests make the key it must be named by, and the program's digest
// and shape hold. It returns the program and its key.
func decodeProgram(data []byte) (bpfKey, []byte, error) {
	var k bpfKey
	if len(data) > 1024+maxBPF {
		return k, nil, fmt.Errorf("%d bytes: too large", len(data))
	}
	head, prog, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return k, nil, errors.New("no header")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) != 4 || lines[0] != bpfFileMagic {
		return k, nil, errors.New("not a kept seccomp program (bad header)")
	}
	var sums [3]string
	for i, name := range []string{"crun", "profile", "program"} {
		v, ok := strings.CutPrefix(lines[i+1], name+" sha256:")
		if !ok || len(v) != 64 {
			return k, nil, fmt.Errorf("header line %d: want %s sha256:<64 hex>", i+2, name)
		}
		if _, err := hex.DecodeString(v); err != nil {
			return k, nil, fmt.Errorf("header line %d: %w", i+2, err)
		}
		sums[i] = v
	}
	if err := validProgram(prog); err != nil {
		return k, nil, err
	}
	if got := sha256.Sum256(prog); hex.EncodeToString(got[:]) != sums[2] {
		return k, nil, errors.New("the program does not match its digest (corrupt)")
	}
	k = bpfKey{crun: sums[0], profile: sums[1]}
	k.key = makeKey(k.crun, k.profile)
	return k, prog, nil
}

// writeProgram writes program b kept under k into dir, atomically.
func writeProgram(dir string, k bpfKey, b []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, k.key+".bpf"), encodeProgram(k, b), 0o600)
}

// load reads the programs kept in the cache dir for the crun binary at
// crunPath. A file that does not check out, or that another crun binary
// compiled, is removed with a log line and never used.
func (c *bpfCache) load(crunPath string) {
	if c.dir == "" {
		return
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("seccomp cache: read dir", "dir", c.dir, "err", err)
		}
		return
	}
	bin, err := c.crunDigest(crunPath)
	if err != nil {
		c.log.Info("seccomp cache: crun binary unreadable; kept programs not loaded", "crun", crunPath, "err", err)
		return
	}
	loaded := 0
	for _, e := range ents {
		p := filepath.Join(c.dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.Remove(p) // a write a crash cut short (atomicfile's temporary)
			continue
		}
		why := ""
		data, err := os.ReadFile(p)
		k, prog, derr := decodeProgram(data)
		switch {
		case err != nil:
			why = err.Error()
		case derr != nil:
			why = derr.Error()
		case e.Name() != k.key+".bpf":
			why = "its name is not its key"
		case k.crun != bin:
			why = "compiled by another crun binary (sha256:" + k.crun + ")"
		}
		if why != "" {
			c.log.Info("seccomp cache: discarding a kept program", "file", p, "why", why)
			if err := os.Remove(p); err != nil {
				c.log.Warn("seccomp cache: remove", "file", p, "err", err)
			}
			continue
		}
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]string{}
		}
		c.m[k.key] = base64.StdEncoding.EncodeToString(prog)
		c.mu.Unlock()
		loaded++
	}
	c.log.Debug("seccomp cache: loaded kept programs", "dir", c.dir, "programs", loaded, "crun", crunPath)
}
