// Package sandbox runs buyers' jobs on containerd, contained and metered.
//
// It owns images (import of digest-checked OCI-layout or docker-archive
// tarballs, pull by reference, both refused before unpacking when their
// layers would unpack to more than max_unpacked_bytes, an unpacked cache
// collected by age and size), the runtimes jobs run under (runc, crun,
// runsc, each through containerd's runc v2 shim, and a probe job that shows
// which ones work on this host), the isolation of a job (fresh empty
// network namespace, read-only root, size-capped tmpfs scratch at /tmp and
// /out, the buyer's input files read-only at /in, copied per job from
// Job.InputDir, no capabilities, no-new-privileges, containerd's default
// seccomp profile, user-namespace remap where the host supports it and the
// remapped root can reach containerd's state, CFS quota, memory and pids
// limits, wall clock), its streams (stdout and stderr capped, with the cap
// reported), its outputs (/out as a deterministic tar with its sha256) and
// its usage record read from the task's cgroup after exit and before
// delete: the evidence a seller's bill rests on. It knows nothing about
// money.
//
// Scratch is RAM: /tmp and /out share one tmpfs of Limits.DiskBytes (the
// runtime's /run and /dev/shm are 64 MiB tmpfs each), and tmpfs pages count
// against the job's memory limit. Admission control should count a job's
// disk as memory on the host.
//
// Everything lives in one containerd namespace. Each Sandbox holds an owner
// lock file, locked before it appears under its name; containers and
// snapshots are labelled with it, so that Reconcile, run by New, removes
// what a crashed owner left without touching the jobs of a live one sharing
// the namespace. With Config.LogBinary a job outlives its owner: its streams
// go to files through a logger the containerd shim runs, Run detaches on
// ErrDetach, and a new owner adopts the jobs the caller keeps (WithKeep) and
// re-attaches them (Reattach; reattach.go, logger.go).
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox/imagetar"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// Error categories; errors returned by this package wrap one of them with %w
// when it applies, so that callers branch with errors.Is.
var (
	// ErrBadImage: the tarball is not an acceptable image (not a tar, not an
	// image, oversized, unsafe entries) or the reference cannot be pulled.
	ErrBadImage = imagetar.ErrBadImage
	// ErrDigestMismatch: the tarball's sha256 is not the one the buyer named.
	ErrDigestMismatch = errors.New("image digest mismatch")
	// ErrBadLimits: the job's limits are nonsense (zero memory, negative CPU…).
	ErrBadLimits = errors.New("bad limits")
	// ErrBadJob: the job itself is malformed (no image, bad environment).
	ErrBadJob = errors.New("bad job")
	// ErrRuntimeUnavailable: the job's runtime is unknown or not installed.
	ErrRuntimeUnavailable = errors.New("runtime unavailable")
	// ErrUnavailable: containerd cannot be reached.
	ErrUnavailable = errors.New("containerd unavailable")
	// ErrClosed: the Sandbox was closed.
	ErrClosed = errors.New("sandbox closed")
	// ErrShimDied: the containerd shim supervising the job died (killed,
	// crashed) while the job ran; the job's processes were ended and its
	// exit and usage are unknown (shimgroup.go: a shared shim's death ends
	// every job of its group).
	ErrShimDied = errors.New("the job's containerd shim died; the job was ended")
)

// Labels put on what the sandbox creates in containerd.
const (
	labelOwnerLock = "blackbox.sandbox/owner-lock" // path of the creating Sandbox's lock file
	labelJobDir    = "blackbox.sandbox/job-dir"    // host directory of the job's scratch mount
	labelJob       = "blackbox.sandbox/job"        // caller's job ID (contract), informative
	labelLastUsed  = "blackbox.sandbox/last-used"  // images: unix seconds of last use
)

// Sandbox runs jobs on one containerd namespace. It is safe for concurrent
// use; Close it to release the client and the owner lock.
type Sandbox struct {
	cfg    Config
	log    *slog.Logger
	client *containerd.Client
	userns bool // guarded by mu: ProbeRuntimes may turn it off

	owner    string // random ID of this Sandbox
	lockPath string
	lockFile *os.File
	// detached counts the jobs left running for the next process: Close
	// keeps the (unlocked) lock file they are labelled with, so that
	// another node's Reconcile knows this one may come back for them.
	detached  atomic.Int32
	jobsDir   string
	fifoDir   string
	tmpDir    string
	memswOK   bool
	closeOnce sync.Once

	mu       sync.Mutex
	closed   bool
	running  sync.WaitGroup
	inUse    map[string]int       // image name → running jobs
	touched  map[string]time.Time // image name → last-used label written
	imgCache map[string]containerd.Image
	importMu sync.Mutex
	// keep and adopted: the jobs of dead owners New keeps for Reattach
	// (reattach.go); adopted maps their container IDs to job dirs.
	keep    func(jobID string) bool
	adopted map[string]string

	// The shared shims (shimgroup.go): closing stops the keepAnchor of
	// every group; anchors counts them.
	shimMu      sync.Mutex
	groups      []*shimGroup
	shimClosing bool // guarded by shimMu: no new group
	closing     chan struct{}
	anchors     sync.WaitGroup

	bpf bpfCache // crun's compiled seccomp programs (seccompbpf.go)
}

// New connects to containerd, takes an owner lock under cfg.StateDir and
// reconciles what crashed owners left behind (keeping, with WithKeep, the
// jobs the caller will re-attach). The logger must not be nil.
func New(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (*Sandbox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox config: %w", err)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("sandbox config: state_dir: empty")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: must run as root (containerd tasks, mounts and cgroups)")
	}
	stateDir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("sandbox state_dir: %w", err)
	}
	cfg.StateDir = stateDir
	s := &Sandbox{
		cfg:      cfg,
		log:      log.With("component", "sandbox"),
		jobsDir:  filepath.Join(stateDir, "jobs"),
		tmpDir:   filepath.Join(stateDir, "tmp"),
		inUse:    map[string]int{},
		touched:  map[string]time.Time{},
		imgCache: map[string]containerd.Image{},
		adopted:  map[string]string{},
		closing:  make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if _, err := runtimeOptions(cfg.Runtime); err != nil {
		return nil, fmt.Errorf("sandbox runtime: %w", err)
	}
	if err := checkMountNS(cfg.Address); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	switch cfg.UserNS {
	case "on":
		if err := userNSSupported(); err != nil {
			return nil, fmt.Errorf("sandbox userns=on: %w", err)
		}
		if dir, mode := unreachable(cfg.UserNSBase, cfg.stateDirs()...); dir != "" {
			return nil, fmt.Errorf("sandbox userns=on: %w", errUnreachable(cfg.UserNSBase, dir, mode))
		}
		s.userns = true
	case "auto":
		if err := userNSSupported(); err != nil {
			s.log.Info("userns auto: jobs run without a user namespace remap", "why", err)
			break
		}
		if dir, mode := unreachable(cfg.UserNSBase, cfg.stateDirs()...); dir != "" {
			s.log.Warn("userns auto: jobs run without a user namespace remap", "why", errUnreachable(cfg.UserNSBase, dir, mode))
			break
		}
		s.userns = true
	}
	_, err = os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	s.memswOK = err == nil

	for _, d := range []string{s.jobsDir, s.tmpDir, filepath.Join(stateDir, "owners"), filepath.Join(stateDir, "fifo")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("sandbox state dir: %w", err)
		}
	}
	if s.userns {
		// The job's remapped root must be able to walk to its bind mounts.
		for _, d := range []string{stateDir, s.jobsDir} {
			if err := os.Chmod(d, 0o711); err != nil {
				return nil, fmt.Errorf("sandbox state dir: %w", err)
			}
		}
	}
	s.bpf.dir, s.bpf.log = filepath.Join(stateDir, "seccomp"), s.log
	if p, err := lookPath("crun"); err == nil {
		s.bpf.load(p)
	}
	if err := s.takeOwnerLock(); err != nil {
		return nil, err
	}
	s.fifoDir = filepath.Join(stateDir, "fifo", s.owner)
	if err := os.MkdirAll(s.fifoDir, 0o700); err != nil {
		s.releaseOwnerLock()
		return nil, fmt.Errorf("sandbox fifo dir: %w", err)
	}

	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, err := containerd.New(cfg.Address,
		containerd.WithDefaultNamespace(cfg.Namespace),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		s.releaseOwnerLock()
		return nil, fmt.Errorf("%w: connect %s: %v", ErrUnavailable, cfg.Address, err)
	}
	if _, err := client.Version(dialCtx); err != nil {
		client.Close()
		s.releaseOwnerLock()
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, cfg.Address, err)
	}
	s.client = client
	if err := s.Reconcile(ctx); err != nil {
		s.log.Warn("reconcile at start failed; continuing", "err", err)
	}
	if cfg.SharedShim {
		s.shimMu.Lock()
		s.startGroup()
		s.shimMu.Unlock()
	}
	s.log.Debug("sandbox ready", "address", cfg.Address, "namespace", cfg.Namespace,
		"runtime", cfg.Runtime, "userns", s.userns, "owner", s.owner)
	return s, nil
}

// Client returns the containerd client (for diagnostics and tests).
func (s *Sandbox) Client() *containerd.Client { return s.client }

// OwnerLock is the path of this Sandbox's owner lock file; containers and
// snapshots it creates carry it as a label.
func (s *Sandbox) OwnerLock() string { return s.lockPath }

// UserNS reports whether jobs run in a remapped user namespace (jobs under
// runsc excepted: gVisor takes no id mappings).
func (s *Sandbox) UserNS() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userns
}

// Close waits for running jobs to finish, then releases the containerd
// client and the owner lock. Cancel the jobs' contexts first to stop them.
func (s *Sandbox) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.running.Wait()
		s.shimMu.Lock()
		s.shimClosing = true
		s.shimMu.Unlock()
		close(s.closing)
		s.anchors.Wait()
		if s.client != nil {
			err = s.client.Close()
		}
		os.RemoveAll(s.fifoDir)
		s.releaseOwnerLock()
	})
	return err
}

// ctx returns ctx in the sandbox's namespace.
func (s *Sandbox) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.cfg.Namespace)
}

// takeOwnerLock creates this Sandbox's owner lock. The file is created and
// locked under a temporary name, then renamed into place: a lock file under
// its final name is always locked while its owner lives, so that another
// process's Reconcile, which takes a lock it can get for a dead owner's,
// never sees a live owner's lock in the moment between creation and flock.
func (s *Sandbox) takeOwnerLock() error {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	s.owner = hex.EncodeToString(b[:])
	dir := filepath.Join(s.cfg.StateDir, "owners")
	s.lockPath = filepath.Join(dir, s.owner+".lock")
	tmp := filepath.Join(dir, s.owner+tmpLockSuffix)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox owner lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sandbox owner lock %s: %w", tmp, err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	if err := os.Rename(tmp, s.lockPath); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sandbox owner lock %s: %w", s.lockPath, err)
	}
	s.lockFile = f
	return nil
}

// tmpLockSuffix names an owner lock before it is locked and renamed into
// place; Reconcile removes such files only when they are not locked.
const tmpLockSuffix = ".lock-new"

func (s *Sandbox) releaseOwnerLock() {
	if s.lockFile == nil {
		return
	}
	if s.detached.Load() == 0 {
		os.Remove(s.lockPath)
	}
	s.lockFile.Close()
	s.lockFile = nil
}

// ownerAlive reports whether the Sandbox holding lockPath still runs: its
// lock file exists and is locked by someone.
func ownerAlive(lockPath, own string) bool {
	if lockPath == own {
		return true
	}
	f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// userNSSupported reports why user namespaces cannot be used, or nil.
func userNSSupported() error {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return fmt.Errorf("kernel without user namespaces: %w", err)
	}
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err == nil && len(b) > 0 && b[0] == '0' {
		return errors.New("user namespaces disabled (/proc/sys/user/max_user_namespaces is 0)")
	}
	return nil
}

func newID() string {
	var b [5]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
