package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// cgroupPath is the cgroup of container id: containerd's default spec
// puts it at /<namespace>/<id> (oci.WithDefaultSpec), and the jobs keep it.
func (s *Sandbox) cgroupPath(id string) string { return filepath.Join("/", s.cfg.Namespace, id) }

// cgroupRoot is where the cgroup file systems are mounted (a variable for
// the unit tests).
var cgroupRoot = "/sys/fs/cgroup"

// cgroupProcs returns the cgroup.procs file of cgroup path: the v1 pids
// hierarchy (every job has a pids limit), else the v2 unified one; "" when
// the cgroup is not there (gone, or never made).
func cgroupProcs(path string) string {
	for _, dir := range []string{filepath.Join(cgroupRoot, "pids", path), filepath.Join(cgroupRoot, path)} {
		p := filepath.Join(dir, "cgroup.procs")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// killCgroup SIGKILLs every process in cgroup path until none is left or
// wait has passed: the job of a shim that died, whose runtime nobody will
// ask to kill. A cgroup that is not there has nothing to kill.
func killCgroup(path string, wait time.Duration) error {
	if path == "" || path == "/" {
		return errors.New("no cgroup")
	}
	procs := cgroupProcs(path)
	if procs == "" {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		pids, err := readPids(procs)
		if errors.Is(err, os.ErrNotExist) || (err == nil && len(pids) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH: gone meanwhile
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes left in %s after %s", len(pids), procs, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPids reads a cgroup.procs file.
func readPids(file string) ([]int, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s: bad pid %q", file, sc.Text())
		}
		pids = append(pids, pid)
	}
	return pids, sc.Err()
}
