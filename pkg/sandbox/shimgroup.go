package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
)

// A shared shim. containerd starts a shim process (containerd-shim-runc-v2)
// for every task: the shim's start and its first connection are a large
// part of a trivial job's time. The runc v2 shim serves every container
// whose OCI spec carries the same group annotation from one process (CRI
// groups a pod's containers so), and it exits when its last container is
// deleted. So each Sandbox keeps an anchor in its group: a container whose
// task is created and never started (its runtime's init waits for a start
// that never comes, running nothing of any image), which keeps the group's
// shim alive between jobs. A job's containment is the same in a shared shim:
// the shim only supervises; each job is its own container, with its own
// namespaces, cgroups, seccomp profile and runtime (the shim runs the
// runtime each container names). Jobs start in their own shim until the
// anchor is up, and again whenever it is not.

// shimGroupAnnotation is the runc v2 shim's grouping annotation.
const shimGroupAnnotation = "io.containerd.runc.v2.group"

// labelRole marks the anchor container (value roleAnchor); jobs have none.
const (
	labelRole  = "blackbox.sandbox/role"
	roleAnchor = "shim-anchor"
)

// anchorID is the container ID of this Sandbox's anchor.
func (s *Sandbox) anchorID() string { return "bb-" + s.owner + "-shim" }

// shimGroup is the group annotation of this Sandbox's jobs.
func (s *Sandbox) shimGroup() string { return "blackbox-" + s.cfg.Namespace + "-" + s.owner }

// groupOpt returns the spec option that puts a job in the shared shim,
// nil while the anchor is not up.
func (s *Sandbox) groupOpt() oci.SpecOpts {
	if !s.anchorUp.Load() {
		return nil
	}
	return oci.WithAnnotations(map[string]string{shimGroupAnnotation: s.shimGroup()})
}

// keepAnchor creates the anchor and re-creates it when its task ends (a
// shim that died takes it along), until Close; then it removes it.
func (s *Sandbox) keepAnchor() {
	defer close(s.anchorDone)
	ctx := s.ctx(context.Background())
	backoff := time.Second
	for {
		task, exited, err := s.createAnchor(ctx)
		if err != nil {
			s.log.Info("shared shim: no anchor, jobs start their own shim", "err", err)
			s.removeAnchor(ctx)
			select {
			case <-s.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		s.anchorUp.Store(true)
		select {
		case <-s.closing:
			s.anchorUp.Store(false)
			s.removeAnchor(ctx)
			return
		case st := <-exited:
			s.anchorUp.Store(false)
			s.log.Info("shared shim: the anchor ended; making another", "exit", st.ExitCode(), "err", st.Error())
			_ = task
			s.removeAnchor(ctx)
		}
	}
}

// anchorRuntime is the runtime of the anchor: one whose created state is a
// small process (runc's or crun's init), the configured one otherwise.
func anchorRuntime(configured string) string {
	for _, rt := range []string{"runc", "crun"} {
		if _, err := runtimeOptions(rt); err == nil {
			return rt
		}
	}
	return configured
}

// createAnchor creates the anchor's container and task (not started) from
// the probe image, under the group annotation.
func (s *Sandbox) createAnchor(ctx context.Context) (containerd.Task, <-chan containerd.ExitStatus, error) {
	tb, args, err := ProbeImage()
	if err != nil {
		return nil, nil, err
	}
	im, err := s.ImportImage(ctx, bytes.NewReader(tb), "")
	if err != nil {
		return nil, nil, fmt.Errorf("probe image: %w", err)
	}
	img, err := s.cachedImage(ctx, im.Name)
	if err != nil {
		return nil, nil, err
	}
	rt := anchorRuntime(s.cfg.Runtime)
	shimOpts, err := s.shimOptions(rt)
	if err != nil {
		return nil, nil, err
	}
	id := s.anchorID()
	labels := map[string]string{labelOwnerLock: s.lockPath, labelRole: roleAnchor, labelRuntime: rt}
	lctx, done, err := s.client.WithLease(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer done(context.WithoutCancel(ctx))
	c, err := s.client.NewContainer(lctx, id,
		containerd.WithContainerLabels(labels),
		containerd.WithImageName(im.Name),
		containerd.WithSnapshotter(s.cfg.Snapshotter),
		containerd.WithNewSnapshot(id, img, snapshots.WithLabels(map[string]string{labelOwnerLock: s.lockPath})),
		containerd.WithRuntime(shimRuntime, shimOpts),
		containerd.WithNewSpec(
			oci.WithImageConfig(img),
			oci.WithProcessArgs(args...),
			oci.WithHostname("sandbox"),
			oci.WithRootFSReadonly(),
			oci.WithNoNewPrivileges,
			oci.WithCapabilities(nil),
			oci.WithAmbientCapabilities(nil),
			seccomp.WithDefaultProfile(),
			oci.WithMemoryLimit(32<<20),
			oci.WithPidsLimit(32),
			oci.WithCPUCFS(10_000, cfsPeriod),
			withFreshNetNS,
			oci.WithAnnotations(map[string]string{shimGroupAnnotation: s.shimGroup()}),
		),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("anchor container: %w", err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		return nil, nil, fmt.Errorf("anchor task: %w", err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("anchor wait: %w", err)
	}
	s.log.Debug("shared shim: anchor up", "container", id, "runtime", rt, "group", s.shimGroup())
	return task, exited, nil
}

// removeAnchor deletes the anchor's task, container and snapshot, if there.
func (s *Sandbox) removeAnchor(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	c, err := s.client.LoadContainer(ctx, s.anchorID())
	if err != nil {
		if !errdefs.IsNotFound(err) {
			s.log.Warn("shared shim: load anchor", "err", err)
		}
		s.removeSnapshot(ctx, s.anchorID())
		return
	}
	if err := s.removeContainer(ctx, c, ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		s.log.Warn("shared shim: remove anchor", "err", err)
	}
}
