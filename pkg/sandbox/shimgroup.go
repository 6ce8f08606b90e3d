package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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

// A shim that dies (kill -9, the host's OOM killer, a shim bug) ends every
// job it serves at once (follow reports ErrShimDied for each). So a group
// holds at most Config.ShimGroupJobs jobs: the jobs beyond start in their
// own shim while another group's anchor comes up for the next ones. Groups
// are made as the jobs running at once need them and kept until Close (an
// idle group costs one shim process and one created-not-started container).

// shimGroup is one shared shim: its anchor and the jobs it serves.
type shimGroup struct {
	idx  int
	up   bool // guarded by Sandbox.shimMu: the anchor is up, jobs may join
	jobs int  // guarded by Sandbox.shimMu: jobs in the group now
}

// anchorID is the container ID of group g's anchor.
func (s *Sandbox) anchorID(g *shimGroup) string {
	if g.idx == 0 {
		return "bb-" + s.owner + "-shim"
	}
	return fmt.Sprintf("bb-%s-shim%d", s.owner, g.idx)
}

// groupName is the group annotation of group g's jobs.
func (s *Sandbox) groupName(g *shimGroup) string {
	if g.idx == 0 {
		return "blackbox-" + s.cfg.Namespace + "-" + s.owner
	}
	return fmt.Sprintf("blackbox-%s-%s-%d", s.cfg.Namespace, s.owner, g.idx)
}

// startGroup adds a group and starts keeping its anchor. Call with shimMu held.
func (s *Sandbox) startGroup() {
	g := &shimGroup{idx: len(s.groups)}
	s.groups = append(s.groups, g)
	s.anchors.Add(1)
	go s.keepAnchor(g)
}

// groupOpt returns the spec option that puts a job in a shared shim with
// room for it, and the function to call when the job has ended; a nil
// option (the job starts its own shim) while no group has room. A job
// that finds every group up and full starts another group for the next.
func (s *Sandbox) groupOpt() (oci.SpecOpts, func()) {
	s.shimMu.Lock()
	defer s.shimMu.Unlock()
	if len(s.groups) == 0 {
		return nil, func() {}
	}
	allFull := true
	for _, g := range s.groups {
		if !g.up {
			allFull = false // coming up (or back): no other group yet
			continue
		}
		if g.jobs < s.cfg.ShimGroupJobs {
			g.jobs++
			var once sync.Once
			return oci.WithAnnotations(map[string]string{shimGroupAnnotation: s.groupName(g)}), func() {
				once.Do(func() {
					s.shimMu.Lock()
					g.jobs--
					s.shimMu.Unlock()
				})
			}
		}
	}
	if allFull && !s.shimClosing {
		s.log.Debug("shared shim: every group is full; starting another", "groups", len(s.groups), "jobs_per_group", s.cfg.ShimGroupJobs)
		s.startGroup()
	}
	return nil, func() {}
}

// setUp records whether g's anchor is up.
func (s *Sandbox) setUp(g *shimGroup, up bool) {
	s.shimMu.Lock()
	g.up = up
	s.shimMu.Unlock()
}

// sharedShims reports, per shim group, whether its anchor is up and how
// many jobs it serves now.
func (s *Sandbox) sharedShims() (up []bool, jobs []int) {
	s.shimMu.Lock()
	defer s.shimMu.Unlock()
	for _, g := range s.groups {
		up = append(up, g.up)
		jobs = append(jobs, g.jobs)
	}
	return up, jobs
}

// keepAnchor creates g's anchor and re-creates it when its task ends (a
// shim that died takes it along), until Close; then it removes it.
func (s *Sandbox) keepAnchor(g *shimGroup) {
	defer s.anchors.Done()
	ctx := s.ctx(context.Background())
	// containerd forgets a dead shim's tasks a moment after it notices
	// (it runs the shim's delete first): until then a new anchor task is
	// refused as "already exists", so the first retries come soon.
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for {
		exited, err := s.createAnchor(ctx, g)
		if err != nil {
			lvl := slog.LevelInfo
			if errdefs.IsAlreadyExists(err) {
				lvl = slog.LevelDebug
			}
			s.log.Log(ctx, lvl, "shared shim: no anchor, jobs start their own shim", "group", g.idx, "err", err, "retry", backoff)
			s.removeAnchor(ctx, g)
			select {
			case <-s.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = minBackoff
		s.setUp(g, true)
		select {
		case <-s.closing:
			s.setUp(g, false)
			s.removeAnchor(ctx, g)
			return
		case st := <-exited:
			s.setUp(g, false)
			s.log.Warn("shared shim: the anchor ended (its shim died?); making another", "group", g.idx, "exit", st.ExitCode(), "err", st.Error())
			s.removeAnchor(ctx, g)
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
func (s *Sandbox) createAnchor(ctx context.Context, g *shimGroup) (<-chan containerd.ExitStatus, error) {
	tb, args, err := ProbeImage()
	if err != nil {
		return nil, err
	}
	im, err := s.ImportImage(ctx, bytes.NewReader(tb), "")
	if err != nil {
		return nil, fmt.Errorf("probe image: %w", err)
	}
	img, err := s.cachedImage(ctx, im.Name)
	if err != nil {
		return nil, err
	}
	rt := anchorRuntime(s.cfg.Runtime)
	shimOpts, err := s.shimOptions(rt)
	if err != nil {
		return nil, err
	}
	id := s.anchorID(g)
	labels := map[string]string{labelOwnerLock: s.lockPath, labelRole: roleAnchor, labelRuntime: rt}
	lctx, done, err := s.client.WithLease(ctx)
	if err != nil {
		return nil, err
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
			oci.WithAnnotations(map[string]string{shimGroupAnnotation: s.groupName(g)}),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("anchor container: %w", err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		return nil, fmt.Errorf("anchor task: %w", err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("anchor wait: %w", err)
	}
	s.log.Debug("shared shim: anchor up", "container", id, "runtime", rt, "group", s.groupName(g))
	return exited, nil
}

// removeAnchor deletes the anchor's task, container and snapshot, if there.
func (s *Sandbox) removeAnchor(ctx context.Context, g *shimGroup) {
	ctx = context.WithoutCancel(ctx)
	c, err := s.client.LoadContainer(ctx, s.anchorID(g))
	if err != nil {
		if !errdefs.IsNotFound(err) {
			s.log.Warn("shared shim: load anchor", "err", err)
		}
		s.removeSnapshot(ctx, s.anchorID(g))
		return
	}
	if err := s.removeContainer(ctx, c, ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		s.log.Warn("shared shim: remove anchor", "err", err)
	}
}
