package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
)

// Reconcile removes what Sandboxes that are no longer running (crashed
// processes) left in the namespace and the state directory: their tasks
// (killed), containers, snapshots, scratch mounts, FIFOs and owner locks;
// then it collects the image cache. Live owners' jobs, including this
// Sandbox's, are left alone. New calls it; it is safe to call at any time.
func (s *Sandbox) Reconcile(ctx context.Context) error {
	ctx = s.ctx(ctx)
	var errs []error
	dead := map[string]bool{} // lock path → owner is dead
	isDead := func(lock string) bool {
		if lock == "" {
			return false // not ours: created by hand or another tool
		}
		d, ok := dead[lock]
		if !ok {
			d = !ownerAlive(lock, s.lockPath)
			dead[lock] = d
		}
		return d
	}
	// A dead owner of another state dir is another node on this
	// containerd, whose next start may adopt its jobs (its restart grace):
	// they are its own to reconcile while its lock file is there, unless
	// they are long over.
	mine := filepath.Join(s.cfg.StateDir, "owners")
	ours := func(lock string, over bool) bool {
		if filepath.Dir(lock) == mine || over {
			return true
		}
		_, err := os.Stat(lock)
		return err != nil // its state dir is gone: nobody comes back for them
	}

	list, err := s.client.Containers(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: list containers: %w", err)
	}
	for _, c := range list {
		labels, err := c.Labels(ctx)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		if !isDead(labels[labelOwnerLock]) || s.isAdopted(c.ID()) {
			continue
		}
		if info, err := c.Info(ctx); err == nil {
			wall, _ := time.ParseDuration(labels[labelWallClock])
			if !ours(labels[labelOwnerLock], time.Since(info.CreatedAt) > wall+foreignGrace) {
				continue
			}
		}
		if s.adopt(ctx, c, labels) {
			continue
		}
		s.log.Info("reconcile: removing container of a crashed run", "container", c.ID())
		if err := s.removeContainer(ctx, c, labels[labelJobDir]); err != nil {
			errs = append(errs, err)
		}
	}

	// Snapshots whose container was never created or already deleted.
	sn := s.client.SnapshotService(s.cfg.Snapshotter)
	var orphans []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive && isDead(info.Labels[labelOwnerLock]) && !s.isAdopted(info.Name) &&
			ours(info.Labels[labelOwnerLock], false) {
			orphans = append(orphans, info.Name)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("reconcile: walk snapshots: %w", err))
	}
	for _, key := range orphans {
		s.log.Info("reconcile: removing snapshot of a crashed run", "snapshot", key)
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("reconcile: remove snapshot %s: %w", key, err))
		}
	}

	// Scratch mounts and FIFOs in our state dir whose owner is dead.
	ownerOf := func(name string) string { // "bb-<owner>-<id>" or "<owner>"
		name = strings.TrimPrefix(name, "bb-")
		if i := strings.IndexByte(name, '-'); i >= 0 {
			name = name[:i]
		}
		return filepath.Join(s.cfg.StateDir, "owners", name+".lock")
	}
	for _, sub := range []string{"jobs", "fifo"} {
		entries, _ := os.ReadDir(filepath.Join(s.cfg.StateDir, sub))
		for _, e := range entries {
			if !isDeadOrMissing(ownerOf(e.Name()), s.lockPath) || s.isAdopted(e.Name()) {
				continue
			}
			p := filepath.Join(s.cfg.StateDir, sub, e.Name())
			var err error
			if sub == "jobs" {
				err = removeJobDir(p)
			} else {
				err = os.RemoveAll(p)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("reconcile: remove %s: %w", p, err))
			}
		}
	}
	// Lock files of dead owners (checked last: the checks above need them).
	locks, _ := filepath.Glob(filepath.Join(s.cfg.StateDir, "owners", "*.lock"))
	for _, l := range locks {
		if !ownerAlive(l, s.lockPath) {
			os.Remove(l)
		}
	}
	// A process that died between creating its lock and renaming it into
	// place left a temporary one. A young one may be a live New's that is
	// not locked yet: only old ones are looked at.
	tmpLocks, _ := filepath.Glob(filepath.Join(s.cfg.StateDir, "owners", "*"+tmpLockSuffix))
	for _, l := range tmpLocks {
		if st, err := os.Stat(l); err == nil && time.Since(st.ModTime()) > time.Minute && !ownerAlive(l, s.lockPath) {
			os.Remove(l)
		}
	}
	// Spooled tarballs of crashed imports. A live import elsewhere keeps
	// its open file readable after the unlink, so this is harmless to it.
	tmps, _ := os.ReadDir(s.tmpDir)
	for _, t := range tmps {
		os.Remove(filepath.Join(s.tmpDir, t.Name()))
	}
	if _, err := s.CollectImages(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// foreignGrace is how long after its wall clock another node's job is
// left for that node to come back for (the longest contract.restart_grace).
const foreignGrace = time.Hour

// isDeadOrMissing is ownerAlive's negation for state-dir entries.
func isDeadOrMissing(lock, own string) bool { return !ownerAlive(lock, own) }

// removeContainer kills and deletes a crashed run's task, deletes the
// container with its snapshot and removes its scratch mount.
func (s *Sandbox) removeContainer(ctx context.Context, c containerd.Container, jobDir string) error {
	task, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
		if err := deleteTask(ctx, task); err != nil {
			return fmt.Errorf("reconcile: delete task %s: %w", c.ID(), err)
		}
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("reconcile: task of %s: %w", c.ID(), err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("reconcile: delete container %s: %w", c.ID(), err)
	}
	if jobDir != "" && strings.HasPrefix(filepath.Base(jobDir), "bb-") {
		if err := removeJobDir(jobDir); err != nil {
			return fmt.Errorf("reconcile: remove %s: %w", jobDir, err)
		}
	}
	return nil
}
