package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
)

// Runtimes are the OCI runtimes a job may run under, each run by
// containerd's runc v2 shim (io.containerd.runc.v2) through its options'
// BinaryName, as Docker runs gVisor: runc (the default), crun, and runsc
// (gVisor: the job runs on a user-space kernel, a second wall around it).
var Runtimes = []string{"runc", "crun", "runsc"}

// shimRuntime is the containerd runtime (shim) every job runs through.
const shimRuntime = "io.containerd.runc.v2"

// runtimeInstall says how to install each runtime, for errors and doctor.
var runtimeInstall = map[string]string{
	"runc":  "apt-get install runc",
	"crun":  "apt-get install crun",
	"runsc": "apt-get install runsc (gVisor; or https://gvisor.dev/docs/user_guide/install/)",
}

// KnownRuntime is nil for a name of Runtimes, else ErrRuntimeUnavailable
// naming them: a caller can refuse a typo before it connects.
func KnownRuntime(name string) error {
	if !slices.Contains(Runtimes, name) {
		return fmt.Errorf("%w: unknown runtime %q (want one of %s)", ErrRuntimeUnavailable, name, strings.Join(Runtimes, ", "))
	}
	return nil
}

// runtimeOptions returns the shim options that make the runc v2 shim run
// name, or ErrRuntimeUnavailable when its binary is not installed.
func runtimeOptions(name string) (*runcoptions.Options, error) {
	if err := KnownRuntime(name); err != nil {
		return nil, err
	}
	if _, err := lookPath("containerd-shim-runc-v2"); err != nil {
		return nil, fmt.Errorf("%w: containerd-shim-runc-v2 not found (apt-get install containerd)", ErrRuntimeUnavailable)
	}
	p, err := lookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%w: runtime %s: %s not found (%s)", ErrRuntimeUnavailable, name, name, runtimeInstall[name])
	}
	switch name {
	case "runc":
		return nil, nil // the shim's own default
	}
	// runsc takes its settings as flags, which the shim does not pass, and
	// crun refuses a hybrid cgroup host: wrappers (shimOptions).
	return &runcoptions.Options{BinaryName: p}, nil
}

// runscFlags are the flags every job's runsc gets. The job's network
// namespace is fresh and empty; runsc's own netstack would refuse it (it
// takes an unnamed namespace for the host's), and a job has no network
// anyway. Without --oci-seccomp runsc ignores the job's seccomp profile
// (gVisor's own filters guard the host, not the job's syscalls to gVisor).
var runscFlags = []string{"--network=none", "--oci-seccomp"}

// unifiedRoot is where a hybrid cgroup host mounts its cgroup v2 hierarchy.
const unifiedRoot = "/sys/fs/cgroup/unified"

// hybridControllers returns the controllers a hybrid cgroup host has on its
// cgroup v2 hierarchy (on this project's machines: hugetlb, the one not
// mounted as v1), "" when there are none or the host is not hybrid.
// crun (≤ 1.x) refuses such a host: "cgroups in hybrid mode not supported,
// drop all controllers from cgroupv2", whatever its cgroup manager; runc
// uses the v1 hierarchies and ignores the v2 one.
func hybridControllers() string {
	var st syscall.Statfs_t
	if syscall.Statfs(unifiedRoot, &st) != nil || st.Type != 0x63677270 { // CGROUP2_SUPER_MAGIC
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(unifiedRoot, "cgroup.controllers"))
	return strings.TrimSpace(string(b))
}

// crunScript is the wrapper the shim runs as crun on a hybrid host with
// controllers on cgroup v2: crun create (the one call that enters cgroups)
// runs in a private mount namespace where an empty tmpfs covers the v2
// mount, so that crun sees a cgroup v1 (legacy) host and uses the v1
// hierarchies as runc does. Jobs set no limit of the v2-only controllers
// (hugetlb), so nothing is lost. What crun writes for the "unified"
// hierarchy lands in that tmpfs and goes with the namespace (unmounting
// the v2 mount instead left it in /sys/fs/cgroup's own tmpfs, under the
// mount, for good). The other calls (start, state, kill, delete) read the
// cgroup paths crun recorded and run as they are. The containerd shim
// deletes a container twice: its own delete, then containerd's clean-up
// after the task's connection closes runs "delete --force" again; the
// second finds no state and is answered here, as crun would (success),
// without starting crun. An argument "create" or "delete" that is not the
// command only costs that time.
func crunScript(crunPath string) string {
	crun := shellQuote(crunPath)
	return "#!/bin/sh\n# written by blackbox: crun create without the cgroup v2 mount of this hybrid host\n" +
		"root=/run/crun cmd= force= prev=\n" +
		"for a; do\n" +
		"\tcase \"$a\" in\n" +
		"\tcreate) exec unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs -o size=64k,mode=0755,nosuid,nodev,noexec blackbox-no-cgroup2 " + unifiedRoot + " && exec \"$0\" \"$@\"' " + crun + " \"$@\" ;;\n" +
		"\t--force|-f) force=1 ;;\n" +
		"\t--root=*) root=${a#--root=} ;;\n" +
		"\tdelete) [ \"$prev\" = --root ] || cmd=delete ;;\n" +
		"\tesac\n" +
		"\t[ \"$prev\" = --root ] && root=$a\n" +
		"\tprev=$a\n" +
		"done\n" +
		"if [ \"$cmd\" = delete ] && [ -n \"$force\" ] && [ -n \"$prev\" ] && [ ! -e \"$root/$prev\" ]; then exit 0; fi\n" +
		"exec " + crun + ` "$@"` + "\n"
}

// runscScript is the wrapper the shim runs as runsc: runsc with runscFlags
// (the shim passes no flags of its own).
func runscScript(runscPath string) string {
	script := "#!/bin/sh\n# written by blackbox: runsc with the sandbox's flags\nexec " + shellQuote(runscPath)
	for _, f := range runscFlags {
		script += " " + shellQuote(f)
	}
	return script + ` "$@"` + "\n"
}

// writeWrapper writes script, under dir, as the executable name the shim
// runs, unless it is there already, and returns its path.
func writeWrapper(dir, name, script string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if old, err := os.ReadFile(p); err == nil && string(old) == script {
		return p, nil
	}
	tmp := p + ".new-" + newID()
	if err := os.WriteFile(tmp, []byte(script), 0o700); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return p, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shimOptions are runtimeOptions for a job of this Sandbox, as an untyped
// nil when the shim's defaults apply.
func (s *Sandbox) shimOptions(name string) (any, error) {
	o, err := runtimeOptions(name)
	if err != nil || o == nil {
		return nil, err
	}
	var script string
	switch {
	case name == "runsc":
		script = runscScript(o.BinaryName)
	case name == "crun" && hybridControllers() != "":
		script = crunScript(o.BinaryName)
	default:
		return o, nil
	}
	p, err := writeWrapper(filepath.Join(s.cfg.StateDir, "runtimes"), name, script)
	if err != nil {
		return nil, fmt.Errorf("%w: %s wrapper: %v", ErrRuntimeUnavailable, name, err)
	}
	o.BinaryName = p
	return o, nil
}

// remapsUsers reports whether jobs under runtime run with the user
// namespace remap. gVisor's runsc runs the job on its own kernel, as an
// unprivileged user on the host already; it does not take id mappings.
func remapsUsers(runtime string) bool { return runtime != "runsc" }

// unreachable reports the first directory among dirs and their ancestors
// that host uid (the remapped root of jobs, not an owner of any of them)
// cannot traverse, or "" when all can be. A job's runtime, once in the
// user namespace, mounts the root file system containerd prepared under
// its state directory: every directory above it must let "others" search
// (mode o+x). A private containerd whose shims created /run/containerd
// left it 0600 (issue 9, bug 11).
func unreachable(uid uint32, dirs ...string) (dir string, mode os.FileMode) {
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		d, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		for ; ; d = filepath.Dir(d) {
			if !seen[d] {
				seen[d] = true
				if st, err := os.Stat(d); err == nil && st.IsDir() && !searchable(st, uid) {
					return d, st.Mode().Perm()
				}
			}
			if d == "/" || d == "." {
				break
			}
		}
	}
	return "", 0
}

// searchable reports whether uid (with gid equal to uid) may traverse the
// directory st.
func searchable(st os.FileInfo, uid uint32) bool {
	perm := st.Mode().Perm()
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return perm&0o001 != 0
	}
	switch {
	case sys.Uid == uid:
		return perm&0o100 != 0
	case sys.Gid == uid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}

// stateDirs are the directories a remapped job must traverse that the
// sandbox can name: containerd's socket directory (its state directory, or
// the state directory's parent in a private containerd's layout) and its
// ancestors.
func (c *Config) stateDirs() []string {
	return []string{filepath.Dir(c.Address)}
}

// errUnreachable is unreachable as an error with the fix.
func errUnreachable(uid uint32, dir string, mode os.FileMode) error {
	return fmt.Errorf("the jobs' remapped root (host uid %d) cannot reach containerd's state: %s is mode %04o; "+
		"fix: chmod o+x %s (containerd itself creates it 0711), or set sandbox.userns: off", uid, dir, mode, dir)
}

var errNoProbe = errors.New("no probe binary for this architecture")
