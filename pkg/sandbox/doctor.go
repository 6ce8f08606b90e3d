package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
)

// Status of a Check.
type Status string

// Check statuses: a Fail means the machine cannot sell compute.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Check is one finding of Diagnose.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do when Status is not ok.
	Fix string `json:"fix,omitempty"`
}

// Diagnose checks whether this machine can run sandboxed jobs with cfg:
// root, containerd reachable, the runtime present, cgroups, seccomp, user
// namespaces and disk room; then, when those allow, it runs a real probe
// job through a Sandbox made from cfg, as the node makes it (its state dir,
// user namespace remap and runtime), and one under each other runtime. The
// probe imports a tiny image into the sandbox's namespace and creates the
// state directory if missing; it changes nothing else.
func Diagnose(ctx context.Context, cfg Config) []Check {
	var out []Check
	add := func(name string, st Status, detail, fix string) {
		out = append(out, Check{Name: name, Status: st, Detail: detail, Fix: fix})
	}

	if os.Geteuid() == 0 {
		add("root", StatusOK, "running as root", "")
	} else {
		add("root", StatusFail, fmt.Sprintf("running as uid %d", os.Geteuid()),
			"run blackbox as root (the systemd unit does): containerd tasks, mounts and cgroups need it")
	}

	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := os.Stat(cfg.Address); err != nil {
		add("containerd", StatusFail, fmt.Sprintf("no socket at %s", cfg.Address),
			"install and start it: apt-get install containerd && systemctl enable --now containerd; or set sandbox.address")
	} else if c, err := containerd.New(cfg.Address, containerd.WithTimeout(3*time.Second)); err != nil {
		add("containerd", StatusFail, fmt.Sprintf("%s: %v", cfg.Address, err),
			"install and start it: apt-get install containerd && systemctl enable --now containerd; or set sandbox.address")
	} else {
		v, err := c.Version(cctx)
		if err != nil {
			add("containerd", StatusFail, fmt.Sprintf("%s: %v", cfg.Address, err),
				"start containerd (systemctl start containerd) or fix sandbox.address; as non-root the socket is not readable")
		} else {
			add("containerd", StatusOK, fmt.Sprintf("%s answers, version %s", cfg.Address, v.Version), "")
		}
		c.Close()
	}

	if _, err := os.Stat(cfg.Address); err == nil {
		if err := checkMountNS(cfg.Address); err != nil {
			add("mounts", StatusFail, err.Error(), mountNSFix)
		} else {
			add("mounts", StatusOK, "in containerd's mount namespace: the jobs' scratch tmpfs is the one their containers get", "")
		}
	}

	if _, err := runtimeOptions(cfg.Runtime); err != nil {
		add("runtime", StatusFail, err.Error(), runtimeInstall[cfg.Runtime]+", or set sandbox.runtime to an installed one")
	} else {
		p, _ := lookPath(cfg.Runtime)
		add("runtime", StatusOK, p+" "+firstLine(p, "--version"), "")
	}

	add(cgroupCheck())
	add(seccompCheck())
	if err := userNSSupported(); err != nil {
		st := StatusWarn
		if cfg.UserNS == "on" {
			st = StatusFail
		}
		add("userns", st, err.Error(), "enable user namespaces (sysctl user.max_user_namespaces=15000); jobs otherwise run as real root inside their other namespaces")
	} else if dir, mode := unreachable(cfg.UserNSBase, cfg.stateDirs()...); dir != "" && cfg.UserNS != "off" {
		st, detail := StatusWarn, "userns auto falls back to no remap: "
		if cfg.UserNS == "on" {
			st, detail = StatusFail, "userns on cannot work: "
		}
		err := errUnreachable(cfg.UserNSBase, dir, mode)
		add("userns", st, detail+err.Error(), fmt.Sprintf("chmod o+x %s, or set sandbox.userns: off", dir))
	} else {
		detail := fmt.Sprintf("available; job root maps to host uid %d", cfg.UserNSBase)
		if cfg.UserNS == "off" {
			detail = "available but disabled by sandbox.userns: off"
		}
		add("userns", StatusOK, detail, "")
	}

	dir := cfg.StateDir
	if dir == "" {
		dir = "/var/lib"
	}
	for dir != "/" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		add("disk", StatusWarn, err.Error(), "")
	} else {
		free := int64(fs.Bavail) * fs.Bsize
		d := fmt.Sprintf("%s free under %s", FormatSize(free), dir)
		switch {
		case free < 1<<30:
			add("disk", StatusFail, d, "free disk space: images and job scratch need at least 1 GiB")
		case free < cfg.MaxUnpackedBytes:
			add("disk", StatusWarn, d, "less room than one image may take (sandbox.max_unpacked_bytes); free space or lower it")
		default:
			add("disk", StatusOK, d, "")
		}
	}
	if ready(out) {
		for _, c := range probeChecks(ctx, cfg) {
			add(c.Name, c.Status, c.Detail, c.Fix)
		}
	}
	return out
}

// ready reports whether the checks so far let a probe job be tried.
func ready(checks []Check) bool {
	for _, c := range checks {
		if c.Status == StatusFail && (c.Name == "root" || c.Name == "containerd" || c.Name == "runtime") {
			return false
		}
	}
	return true
}

// probeChecks runs the probe job through a Sandbox made from cfg, as the
// node makes it: under the configured runtime, then each other runtime.
func probeChecks(ctx context.Context, cfg Config) []Check {
	var warnings warnLog
	sb, err := New(ctx, cfg, slog.New(&warnings))
	if err != nil {
		return []Check{{Name: "probe", Status: StatusFail, Detail: "sandbox: " + err.Error(), Fix: probeFix(cfg, err, cfg.UserNS == "on")}}
	}
	defer sb.Close()
	remapped := sb.UserNS()
	ok, failed := sb.ProbeRuntimes(ctx, append([]string{cfg.Runtime}, without(Runtimes, cfg.Runtime)...)...)
	var out []Check
	if err := failed[cfg.Runtime]; err != nil {
		out = append(out, Check{Name: "probe", Status: StatusFail,
			Detail: fmt.Sprintf("a probe job under %s failed: %v", cfg.Runtime, err),
			Fix:    probeFix(cfg, err, sb.UserNS() && remapsUsers(cfg.Runtime))})
	} else {
		how := "without a user namespace remap"
		if sb.UserNS() && remapsUsers(cfg.Runtime) {
			how = fmt.Sprintf("with its root remapped to host uid %d", cfg.UserNSBase)
		}
		out = append(out, Check{Name: "probe", Status: StatusOK, Detail: fmt.Sprintf("a probe job ran under %s %s", cfg.Runtime, how)})
	}
	if remapped && !sb.UserNS() {
		out = append(out, Check{Name: "userns", Status: StatusWarn,
			Detail: "userns auto: jobs fail with the user namespace remap here and run without it: " + warnings.String(),
			Fix:    "make containerd's state reachable by the remapped root (chmod o+x on each directory above it), or set sandbox.userns: off"})
	}
	var bad []string
	for _, rt := range Runtimes {
		if err := failed[rt]; err != nil && rt != cfg.Runtime {
			bad = append(bad, fmt.Sprintf("%s: %v", rt, err))
		}
	}
	c := Check{Name: "runtimes", Status: StatusOK, Detail: "jobs can run under " + strings.Join(ok, ", ")}
	if len(bad) > 0 {
		c.Status = StatusWarn
		c.Detail += "; not under " + strings.Join(bad, "; ")
		c.Fix = "only the runtimes that work are offered; " + installHints(failed)
	}
	return append(out, c)
}

// probeFix says what to do about a probe failure.
func probeFix(cfg Config, err error, remap bool) string {
	switch {
	case errors.Is(err, ErrRuntimeUnavailable):
		return runtimeInstall[cfg.Runtime] + ", or set sandbox.runtime to an installed one"
	case errors.Is(err, ErrUnavailable):
		return "start containerd (systemctl start containerd) or fix sandbox.address"
	case remap && strings.Contains(err.Error(), "permission denied"):
		return "the jobs' remapped root cannot reach containerd's state directory: chmod o+x on each directory above it (e.g. chmod 711 /run/containerd), or set sandbox.userns: off"
	case strings.Contains(err.Error(), "permission denied"):
		return "check containerd's log (journalctl -u containerd) for the denied path; sandbox.state_dir and containerd's state must be usable by root"
	}
	return "reproduce with `blackbox sandbox run --image IMAGE -- true` and check containerd's log (journalctl -u containerd)"
}

func installHints(failed map[string]error) string {
	var h []string
	for _, rt := range Runtimes {
		if errors.Is(failed[rt], ErrRuntimeUnavailable) {
			h = append(h, runtimeInstall[rt])
		}
	}
	if len(h) == 0 {
		return "the others fail for the reasons above"
	}
	return "to offer the missing ones: " + strings.Join(h, "; ")
}

func without(l []string, x string) []string {
	var out []string
	for _, s := range l {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

// warnLog is a slog handler keeping the errors of a Sandbox's warnings
// (their "err" or "why" attribute) for doctor.
type warnLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "why" {
			msg = a.Value.String()
		}
		return true
	})
	w.mu.Lock()
	w.msgs = append(w.msgs, msg)
	w.mu.Unlock()
	return nil
}
func (w *warnLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnLog) WithGroup(string) slog.Handler      { return w }
func (w *warnLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.msgs, "; ")
}

func cgroupCheck() (string, Status, string, string) {
	const fix = "boot with cgroups enabled (cpu, cpuacct, memory, pids); on cgroup v1 memory needs cgroup_enable=memory"
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		have := strings.Fields(string(b))
		for _, want := range []string{"cpu", "memory", "pids"} {
			if !contains(have, want) {
				return "cgroups", StatusFail, "cgroup v2 without the " + want + " controller", fix
			}
		}
		return "cgroups", StatusOK, "cgroup v2 with cpu, memory, pids", ""
	}
	var missing []string
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "cgroup.procs")); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return "cgroups", StatusFail, "cgroup v1 controllers not mounted: " + strings.Join(missing, ", "), fix
	}
	return "cgroups", StatusOK, "cgroup v1 with cpu, cpuacct, memory, pids", ""
}

func seccompCheck() (string, Status, string, string) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "seccomp", StatusWarn, err.Error(), ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Seccomp:") {
			return "seccomp", StatusOK, "kernel supports seccomp filters; containerd's default profile applies", ""
		}
	}
	return "seccomp", StatusFail, "kernel without seccomp (no Seccomp: in /proc/self/status)",
		"use a kernel built with CONFIG_SECCOMP_FILTER (every Debian kernel is)"
}

// lookPath finds bin on PATH or in the sbin directories root's PATH has.
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin"} {
		p := filepath.Join(d, bin)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func firstLine(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).Output()
	l, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(l)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
