package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// namespaces and disk room. It never changes anything.
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

	switch cfg.Runtime {
	case "runsc":
		if err := runscAvailable(); err != nil {
			add("runtime", StatusFail, err.Error(), "install gVisor's runsc and containerd-shim-runsc-v1, or set sandbox.runtime: runc")
		} else {
			add("runtime", StatusOK, "runsc and containerd-shim-runsc-v1 found", "")
		}
	default:
		if p, err := lookPath("runc"); err != nil {
			add("runtime", StatusFail, "runc not found", "apt-get install runc")
		} else if _, err := lookPath("containerd-shim-runc-v2"); err != nil {
			add("runtime", StatusFail, "containerd-shim-runc-v2 not found", "apt-get install containerd (it ships the runc shim)")
		} else {
			add("runtime", StatusOK, p+" "+firstLine(p, "--version"), "")
		}
	}

	add(cgroupCheck())
	add(seccompCheck())
	if err := userNSSupported(); err != nil {
		st := StatusWarn
		if cfg.UserNS == "on" {
			st = StatusFail
		}
		add("userns", st, err.Error(), "enable user namespaces (sysctl user.max_user_namespaces=15000); jobs otherwise run as real root inside their other namespaces")
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
	return out
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
