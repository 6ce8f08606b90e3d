package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

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

// bpfCache holds compiled seccomp programs by seccompKey.
type bpfCache struct {
	mu sync.Mutex
	m  map[string]string // key → the program, base64 as the annotation wants
}

// seccompKey names a profile compiled by one crun binary: the profile's
// JSON and the binary's path, size and modification time.
func seccompKey(spec *oci.Spec, crunPath string) (string, error) {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return "", nil
	}
	st, err := os.Stat(crunPath)
	if err != nil {
		return "", err
	}
	prof, err := json.Marshal(spec.Linux.Seccomp)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00", crunPath, st.Size(), st.ModTime().UnixNano())
	h.Write(prof)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// withCrunBPF is a spec option, after the seccomp profile's: it gives the
// job the profile's compiled program when the cache has it, else it sets
// *capture to the key under which to keep what crun compiles.
func (c *bpfCache) withCrunBPF(crunPath string, capture *string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		key, err := seccompKey(s, crunPath)
		if err != nil || key == "" {
			return nil // crun compiles it, as without the cache
		}
		c.mu.Lock()
		prog, ok := c.m[key]
		c.mu.Unlock()
		if !ok {
			*capture = key
			return nil
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[crunBPFAnnotation] = prog
		return nil
	}
}

// keep reads the program crun compiled for the created container id (in
// namespace ns) and keeps it under key.
func (c *bpfCache) keep(ns, id, key string) error {
	b, err := os.ReadFile(filepath.Join(runtimeRoot, ns, id, "seccomp.bpf"))
	if err != nil {
		return err
	}
	if len(b) == 0 || len(b)%8 != 0 || len(b) > maxBPF {
		return fmt.Errorf("seccomp program of %d bytes: not a program", len(b))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[key] = base64.StdEncoding.EncodeToString(b)
	return nil
}
