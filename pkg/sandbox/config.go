package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// Config is the sandbox's configuration (config section "sandbox"). Sizes
// are in bytes. DefaultConfig documents every default.
type Config struct {
	// Address is the containerd socket.
	Address string `mapstructure:"address"`
	// Namespace is the containerd namespace holding our images, containers
	// and snapshots; nothing outside it is touched.
	Namespace string `mapstructure:"namespace"`
	// Runtime is the OCI runtime of jobs that name none: "runc", "crun" or
	// "runsc" (gVisor), each run by containerd's runc v2 shim; its binary
	// must be installed.
	Runtime string `mapstructure:"runtime"`
	// Snapshotter is the containerd snapshotter for job root file systems.
	Snapshotter string `mapstructure:"snapshotter"`
	// StateDir holds per-job scratch mounts, FIFOs, spooled image tarballs
	// and the owner locks used to reconcile after a crash. Required.
	StateDir string `mapstructure:"state_dir"`
	// UserNS is "auto" (remap root to UserNSBase when the host supports
	// user namespaces and the remapped root can reach containerd's state;
	// otherwise jobs run without the remap, with a warning), "on"
	// (required: New fails when it cannot work) or "off". Jobs under runsc
	// are never remapped: gVisor takes no id mappings.
	UserNS string `mapstructure:"userns"`
	// UserNSBase is the host uid/gid that a job's root maps to; a range of
	// 65536 ids from it is used.
	UserNSBase uint32 `mapstructure:"userns_base"`
	// MaxImageBytes caps an image tarball as received.
	MaxImageBytes int64 `mapstructure:"max_image_bytes"`
	// MaxUnpackedBytes caps an image's unpacked root file system.
	MaxUnpackedBytes int64 `mapstructure:"max_unpacked_bytes"`
	// ImageCacheBytes is the total size of cached images kept; the least
	// recently used beyond it are removed.
	ImageCacheBytes int64 `mapstructure:"image_cache_bytes"`
	// ImageCacheAge removes cached images unused for this long.
	ImageCacheAge time.Duration `mapstructure:"image_cache_age"`
	// OutputCap is the default cap, per stream, on a job's stdout and stderr.
	OutputCap int64 `mapstructure:"output_cap"`
	// DefaultPids is the pids limit of a job whose Limits.Pids is zero.
	DefaultPids int64 `mapstructure:"default_pids"`
	// DefaultDiskBytes is the scratch size of a job whose Limits.DiskBytes is zero.
	DefaultDiskBytes int64 `mapstructure:"default_disk_bytes"`
	// SharedShim runs the jobs through one long-lived containerd shim
	// instead of starting a shim for every job (shimgroup.go): a job
	// starts faster, and is contained the same. On by default; not a key
	// of the file (tests and tools that count containers turn it off).
	SharedShim bool `mapstructure:"-"`
	// ShimGroupJobs caps the jobs one shared shim serves at once: a shim
	// that dies ends every job it serves, so this bounds what one shim's
	// death costs. The jobs beyond start another group (shimgroup.go).
	ShimGroupJobs int `mapstructure:"shim_group_jobs"`
	// ProbeTimeout bounds the probe job each offered runtime runs at
	// start (ProbeRuntimes): on a loaded machine gVisor's first container
	// takes seconds to create. A runtime whose probe runs out of time is
	// slow, not broken: the node probes it again later, after waits that
	// scale with this (ReprobeDelays), and offers it once it runs.
	ProbeTimeout time.Duration `mapstructure:"probe_timeout"`
	// LogBinary, when set, is this program's absolute path: jobs' streams
	// then go to files through a logger the containerd shim runs (this
	// program, see IsLogger), not through the daemon's pipes, so that a job
	// outlives its daemon and Reattach finds all it wrote. Empty: FIFOs to
	// this process, and no job survives it. Set by the node, not the file.
	LogBinary string `mapstructure:"-"`
}

// DefaultConfig returns the defaults: the system containerd socket,
// namespace "blackbox", runc on overlayfs, user namespaces where available
// (root mapped to 1,000,000), tarballs up to 2 GiB unpacking to at most
// 8 GiB, an image cache of 20 GiB dropping images unused for 7 days, 16 MiB
// of stdout and of stderr per job, 512 pids and 256 MiB of scratch unless the
// job says otherwise, at most 4 jobs per shared shim, a minute for each
// runtime's probe job. StateDir is left empty: the caller sets it under
// its data directory.
func DefaultConfig() Config {
	return Config{
		Address:          "/run/containerd/containerd.sock",
		Namespace:        "blackbox",
		Runtime:          "runc",
		Snapshotter:      "overlayfs",
		UserNS:           "auto",
		UserNSBase:       1_000_000,
		MaxImageBytes:    2 << 30,
		MaxUnpackedBytes: 8 << 30,
		ImageCacheBytes:  20 << 30,
		ImageCacheAge:    7 * 24 * time.Hour,
		OutputCap:        16 << 20,
		DefaultPids:      512,
		DefaultDiskBytes: 256 << 20,
		SharedShim:       true,
		ShimGroupJobs:    4,
		ProbeTimeout:     time.Minute,
	}
}

// Validate reports the first invalid key and why.
func (c *Config) Validate() error {
	switch {
	case c.Address == "":
		return errors.New("address: empty; set the containerd socket path")
	case c.Namespace == "" || strings.ContainsAny(c.Namespace, "/ \t"):
		return fmt.Errorf("namespace %q: must be a non-empty name without '/' or spaces", c.Namespace)
	case !slices.Contains(Runtimes, c.Runtime):
		return fmt.Errorf("runtime %q: must be one of %s", c.Runtime, strings.Join(Runtimes, ", "))
	case c.Snapshotter == "":
		return errors.New("snapshotter: empty; use overlayfs")
	case c.UserNS != "auto" && c.UserNS != "on" && c.UserNS != "off":
		return fmt.Errorf("userns %q: must be auto, on or off", c.UserNS)
	case c.UserNSBase == 0 || uint64(c.UserNSBase)+65536 > math.MaxUint32:
		return fmt.Errorf("userns_base %d: must be in 1..%d", c.UserNSBase, uint64(math.MaxUint32)-65536)
	case c.MaxImageBytes <= 0:
		return fmt.Errorf("max_image_bytes %d: must be positive", c.MaxImageBytes)
	case c.MaxUnpackedBytes <= 0:
		return fmt.Errorf("max_unpacked_bytes %d: must be positive", c.MaxUnpackedBytes)
	case c.ImageCacheBytes < 0:
		return fmt.Errorf("image_cache_bytes %d: must not be negative", c.ImageCacheBytes)
	case c.ImageCacheAge < 0:
		return fmt.Errorf("image_cache_age %s: must not be negative", c.ImageCacheAge)
	case c.OutputCap <= 0:
		return fmt.Errorf("output_cap %d: must be positive", c.OutputCap)
	case c.DefaultPids <= 0:
		return fmt.Errorf("default_pids %d: must be positive", c.DefaultPids)
	case c.DefaultDiskBytes <= 0:
		return fmt.Errorf("default_disk_bytes %d: must be positive", c.DefaultDiskBytes)
	case c.ShimGroupJobs < 1 || c.ShimGroupJobs > 1024:
		return fmt.Errorf("shim_group_jobs %d: must be in 1..1024", c.ShimGroupJobs)
	case c.ProbeTimeout < time.Second || c.ProbeTimeout > time.Hour:
		return fmt.Errorf("probe_timeout %s: must be in 1s..1h", c.ProbeTimeout)
	case c.LogBinary != "" && !filepath.IsAbs(c.LogBinary):
		return fmt.Errorf("log binary %q: must be an absolute path", c.LogBinary)
	}
	return nil
}

// Limits are what a contract grants a job. CPUMillis, MemoryBytes and
// WallClock are required; Pids and DiskBytes fall back to the config's
// defaults when zero.
type Limits struct {
	// CPUMillis is the CFS quota in millicores (1000 = one core).
	CPUMillis int64 `json:"cpu_millis"`
	// MemoryBytes is the memory cgroup limit. The scratch file systems are
	// tmpfs, so what the job writes to /tmp and /out counts against it too.
	MemoryBytes int64 `json:"memory_bytes"`
	// Pids caps the number of processes and threads.
	Pids int64 `json:"pids"`
	// DiskBytes is the size shared by the writable scratch (/tmp) and /out.
	DiskBytes int64 `json:"disk_bytes"`
	// WallClock is the longest the job may run; then it is killed with
	// reason "timeout".
	WallClock time.Duration `json:"-"` // JSON: wall_clock_seconds
}

type limitsJSON Limits

// MarshalJSON writes the limits with the wall clock in seconds.
func (l Limits) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		limitsJSON
		WallClockSeconds float64 `json:"wall_clock_seconds"`
	}{limitsJSON(l), l.WallClock.Seconds()})
}

// Bounds a contract cannot exceed, and the least that makes sense.
const (
	minMemory    = 4 << 20
	minCPUMillis = 10 // CFS allows at least 1 ms per 100 ms period
	maxCPUMillis = 1024 * 1000
	minDisk      = 64 << 10
	cfsPeriod    = 100_000 // µs
)

// Validate refuses nonsense limits with ErrBadLimits.
func (l Limits) Validate() error {
	switch {
	case l.CPUMillis < minCPUMillis || l.CPUMillis > maxCPUMillis:
		return fmt.Errorf("%w: cpu %d millicores: must be in %d..%d", ErrBadLimits, l.CPUMillis, minCPUMillis, maxCPUMillis)
	case l.MemoryBytes < minMemory:
		return fmt.Errorf("%w: memory %d bytes: must be at least %s", ErrBadLimits, l.MemoryBytes, FormatSize(minMemory))
	case l.Pids < 0:
		return fmt.Errorf("%w: pids %d: must not be negative", ErrBadLimits, l.Pids)
	case l.Pids > 0 && l.Pids < 2:
		return fmt.Errorf("%w: pids %d: a job needs at least 2", ErrBadLimits, l.Pids)
	case l.DiskBytes < 0:
		return fmt.Errorf("%w: disk %d bytes: must not be negative", ErrBadLimits, l.DiskBytes)
	case l.DiskBytes > 0 && l.DiskBytes < minDisk:
		return fmt.Errorf("%w: disk %d bytes: must be at least %s", ErrBadLimits, l.DiskBytes, FormatSize(minDisk))
	case l.WallClock <= 0:
		return fmt.Errorf("%w: wall clock %s: must be positive", ErrBadLimits, l.WallClock)
	}
	return nil
}

// FormatSize renders n bytes for humans, as everywhere else in blackbox
// (quantity.FormatSize: binary units, "1.5GiB").
func FormatSize(n int64) string { return quantity.FormatSize(n) }
