package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/stats/v1"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Job is one run of a command in an image under limits.
type Job struct {
	// ID is the caller's name for the job (a contract ID); it labels the
	// container and the log lines. Optional.
	ID string
	// Image is an Image.Name from ImportImage or Pull.
	Image string
	// Args replace the image's command when not empty.
	Args []string
	// Env entries (KEY=VALUE) are added to the image's environment.
	Env []string
	// Limits are enforced by the kernel (cgroups, tmpfs size) and a timer.
	Limits Limits
	// Stdout and Stderr receive the job's streams, each capped at
	// OutputCap bytes; nil discards (bytes are still counted). They are
	// written from containerd's copy goroutines: a slow writer slows the
	// job (its pipe fills), so buffer when writing to the network.
	Stdout, Stderr io.Writer
	// OutputCap caps each of stdout and stderr; 0 means the config's output_cap.
	OutputCap int64
	// InputDir is a host directory whose files the job sees read-only at
	// /in; empty: no /in. It must hold only regular files and directories
	// (no symlinks, devices, FIFOs or sockets), at most InputCap bytes in
	// all, or Run refuses the job with ErrBadJob before anything runs. Run
	// copies it into the job's state (directories 0755, files 0644, owned
	// by root) and bind-mounts the copy read-only, nosuid, nodev, noexec:
	// the caller's files are never changed, and what the job sees cannot
	// change or grow while it runs. The copy is on the state directory's
	// disk and removed with the job.
	InputDir string
	// InputCap caps the total size of InputDir's files; 0 means the
	// config's max_image_bytes (the most a buyer may ship as an image).
	InputCap int64
	// Runtime is the OCI runtime to run the job under, one of Runtimes;
	// empty means the config's runtime. ErrRuntimeUnavailable when it is
	// not installed.
	Runtime string
	// Output receives /out as a tar (sorted, zeroed times and owners, so
	// that its sha256 is reproducible); nil discards it (the digest is
	// still computed).
	Output io.Writer
	// OnStart, if set, is told the pid (in the host's pid namespace) of
	// the job's init process once it started: DialNetNS reaches a port in
	// the job's network namespace through it.
	OnStart func(pid int)

	noUserNS bool // the probe's run without the remap
}

// Reason says why a job ended.
type Reason string

// Reasons a job ends.
const (
	ReasonExited  Reason = "exited"  // the job's process exited by itself
	ReasonTimeout Reason = "timeout" // the wall clock ran out; killed
	ReasonOOM     Reason = "oom"     // the kernel OOM-killed a process of the job
	ReasonKilled  Reason = "killed"  // the caller cancelled; killed
	ReasonError   Reason = "error"   // the job could not start
)

// Result is the record of a finished job, read from its cgroup after exit
// and before the task is deleted.
type Result struct {
	// Container is the containerd container ID the job ran as.
	Container string `json:"container"`
	// ExitCode is the exit status of the job's process; 128+signal when
	// killed by a signal; -1 when it never started.
	ExitCode int    `json:"exit_code"`
	Reason   Reason `json:"reason"`
	// Error explains ReasonError.
	Error string `json:"error,omitempty"`
	// CPUTime is the CPU time of all the job's processes (cgroup cpuacct).
	CPUTime time.Duration `json:"-"` // JSON: cpu_seconds
	// PeakMemory is the memory cgroup's high-water mark, including tmpfs pages.
	PeakMemory int64 `json:"peak_memory_bytes"`
	// OOMKills counts processes of the job the kernel OOM-killed.
	OOMKills int64 `json:"oom_kills"`
	// Wall is the time from start to exit.
	Wall time.Duration `json:"-"` // JSON: wall_seconds
	// StdoutBytes and StderrBytes are what the job wrote, including what
	// was cut; the Truncated flags say the cap was hit.
	StdoutBytes     int64 `json:"stdout_bytes"`
	StderrBytes     int64 `json:"stderr_bytes"`
	StdoutTruncated bool  `json:"stdout_truncated"`
	StderrTruncated bool  `json:"stderr_truncated"`
	// Output describes the tar of /out.
	Output Output `json:"output"`
	// Limits are the limits the job ran under, defaults applied.
	Limits Limits `json:"limits"`
	// Runtime is the OCI runtime the job ran under.
	Runtime string `json:"runtime"`

	remapped bool   // the job ran with the user namespace remap
	trace    *spans // where the job's time went (Phases)
}

type resultJSON Result

// MarshalJSON writes the result with its durations in seconds, as every
// blackbox JSON does.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		resultJSON
		CPUSeconds  float64 `json:"cpu_seconds"`
		WallSeconds float64 `json:"wall_seconds"`
	}{resultJSON(r), r.CPUTime.Seconds(), r.Wall.Seconds()})
}

// Output describes the tar of a job's /out.
type Output struct {
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
	Files  int    `json:"files"`
}

// Run runs job to the end and returns its Result. The context cancels the
// job (Reason "killed", with a nil error: the usage is still measured). An
// error with a nil Result means the job never existed (bad image or limits,
// containerd down); an error with a Result of Reason "error" means the
// container was created but its process could not start (for example the
// command does not exist). Either way nothing of the job stays behind.
//
// In userns "auto", a job whose runtime is denied its root file system
// with the remap (containerd's state out of the remapped root's reach) is
// checked with the probe job, with and without the remap; if only the
// remap fails, the remap is turned off for every job, with a warning, and
// the job runs again without it.
func (s *Sandbox) Run(ctx context.Context, job Job) (*Result, error) {
	res, err := s.run(ctx, job)
	if err == nil || res == nil || res.Reason != ReasonError || !res.remapped || s.cfg.UserNS != "auto" ||
		!strings.Contains(res.Error, "permission denied") || ctx.Err() != nil {
		return res, err
	}
	if s.probe(ctx, job.Runtime, true) == nil || s.probe(ctx, job.Runtime, false) != nil {
		return res, err // not the remap's fault
	}
	s.log.Warn("userns auto: jobs fail with the user namespace remap; running them without it (sandbox.userns: off to silence, or fix the host: see `blackbox doctor`)",
		"runtime", res.Runtime, "err", res.Error)
	s.mu.Lock()
	s.userns = false
	s.mu.Unlock()
	return s.run(ctx, job)
}

func (s *Sandbox) run(ctx context.Context, job Job) (*Result, error) {
	sp := newSpans()
	lim := job.Limits
	if lim.Pids == 0 {
		lim.Pids = s.cfg.DefaultPids
	}
	if lim.DiskBytes == 0 {
		lim.DiskBytes = s.cfg.DefaultDiskBytes
	}
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if job.Image == "" {
		return nil, fmt.Errorf("%w: no image", ErrBadJob)
	}
	for _, e := range job.Env {
		if !strings.Contains(e, "=") || strings.HasPrefix(e, "=") || strings.ContainsRune(e, 0) {
			return nil, fmt.Errorf("%w: environment entry %q: want KEY=VALUE", ErrBadJob, e)
		}
	}
	for _, a := range job.Args {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("%w: argument with a NUL byte", ErrBadJob)
		}
	}
	rt := job.Runtime
	if rt == "" {
		rt = s.cfg.Runtime
	}
	shimOpts, err := s.shimOptions(rt)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	remap := s.userns && remapsUsers(rt) && !job.noUserNS
	s.mu.Unlock()
	outCap := s.outputCap(job)
	inCap := job.InputCap
	if inCap <= 0 {
		inCap = s.cfg.MaxImageBytes
	}
	if job.InputDir != "" {
		if _, err := walkInput(job.InputDir, inCap, nil); err != nil {
			return nil, err
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.running.Add(1)
	s.inUse[job.Image]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inUse[job.Image]--
		if s.inUse[job.Image] == 0 {
			delete(s.inUse, job.Image)
		}
		s.mu.Unlock()
		s.running.Done()
	}()

	ctx = s.ctx(ctx)
	// Cleanup must finish even when the caller's context is cancelled.
	bg := context.WithoutCancel(ctx)
	img, err := s.cachedImage(ctx, job.Image)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("%w: image %q not imported", ErrBadJob, job.Image)
		}
		return nil, fmt.Errorf("run: image %s: %w", job.Image, err)
	}
	s.touchImage(ctx, job.Image)
	sp.mark("setup")

	id := "bb-" + s.owner + "-" + newID()
	log := s.log.With("container", id)
	if job.ID != "" {
		log = log.With("job", job.ID)
	}
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		cleanups = nil
	}
	defer cleanup()

	jobDir := filepath.Join(s.jobsDir, id)
	if err := s.mountScratch(jobDir, lim.DiskBytes, remap); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	cleanups = append(cleanups, func() {
		if err := removeJobDir(jobDir); err != nil {
			log.Warn("remove job dir", "err", err)
		}
	})
	if job.InputDir != "" {
		// Checked above; the copy checks again as it reads.
		st, err := copyInput(job.InputDir, filepath.Join(jobDir, "in"), inCap)
		if err != nil {
			if errors.Is(err, ErrBadJob) {
				return nil, err
			}
			return nil, fmt.Errorf("run: %w", err)
		}
		log.Debug("input copied", "files", st.Files, "dirs", st.Dirs, "bytes", st.Bytes)
	}

	sp.mark("scratch")

	labels := map[string]string{labelOwnerLock: s.lockPath, labelJobDir: jobDir, labelWallClock: lim.WallClock.String(), labelRuntime: rt}
	if job.ID != "" {
		labels[labelJob] = job.ID
	}
	specOpts := s.specOpts(img, job, lim, jobDir, remap)
	if g, leave := s.groupOpt(); g != nil {
		specOpts = append(specOpts, g)
		defer leave()
	}
	var bpfCapture bpfKey // set: keep the seccomp program crun compiles for this job
	if rt == "crun" {
		if p, err := lookPath("crun"); err == nil {
			specOpts = append(specOpts, s.bpf.withCrunBPF(p, &bpfCapture))
		}
	}
	snapOpt := containerd.WithNewSnapshot(id, img, snapshots.WithLabels(map[string]string{labelOwnerLock: s.lockPath}))
	if remap {
		snapOpt = withRemappedSnapshotLabelled(id, img, s.cfg.UserNSBase, map[string]string{labelOwnerLock: s.lockPath})
	}
	// The lease keeps the new snapshot (and a just remapped parent) from
	// the garbage collector until the container references it.
	lctx, doneLease, err := s.client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("run: lease: %w", err)
	}
	sp.mark("lease")
	container, err := s.client.NewContainer(lctx, id,
		containerd.WithContainerLabels(labels),
		containerd.WithImageName(job.Image),
		containerd.WithSnapshotter(s.cfg.Snapshotter),
		snapOpt,
		sp.opt("snapshot"),
		containerd.WithRuntime(shimRuntime, shimOpts),
		containerd.WithNewSpec(specOpts...),
		sp.opt("spec"),
	)
	doneLease(bg)
	sp.mark("container")
	if err != nil {
		// NewContainer may have prepared the snapshot before failing.
		s.removeSnapshot(bg, id)
		return nil, fmt.Errorf("run: create container: %w", err)
	}
	cleanups = append(cleanups, func() {
		if err := container.Delete(bg, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			log.Warn("delete container", "err", err)
		}
	})

	stdout, stderr := s.streams(job)
	res := &Result{Container: id, ExitCode: -1, Limits: lim, Runtime: rt, remapped: remap}
	creator := cio.NewCreator(cio.WithStreams(nil, stdout, stderr), cio.WithFIFODir(s.fifoDir))
	logDir := ""
	if s.cfg.LogBinary != "" {
		// The streams go to files through a logger the shim owns
		// (logger.go), so that the job survives the daemon.
		logDir = filepath.Join(jobDir, "log")
		if err := os.Mkdir(logDir, 0o700); err != nil {
			return nil, fmt.Errorf("run: log dir: %w", err)
		}
		creator = cio.BinaryIO(s.cfg.LogBinary, map[string]string{loggerFlag: logDir, loggerCapFlag: strconv.FormatInt(outCap, 10)})
	}
	task, err := container.NewTask(ctx, creator)
	if err != nil {
		res.Reason, res.Error = ReasonError, cleanTaskError(err)
		log.Info("job failed to start", "err", err)
		return res, fmt.Errorf("run: create task: %w", err)
	}
	taskDeleted := false
	deleteTask := func() {
		if taskDeleted {
			return
		}
		taskDeleted = true
		if err := deleteTask(bg, task); err != nil {
			log.Warn("delete task", "err", err)
		}
	}
	cleanups = append(cleanups, deleteTask)
	if bpfCapture.key != "" {
		if err := s.bpf.keep(s.cfg.Namespace, id, bpfCapture); err != nil {
			log.Debug("keep crun's seccomp program", "err", err)
		}
	}
	sp.mark("task")
	// Wait before Start, on a context the job's timeout does not cancel.
	statusC, err := task.Wait(bg)
	if err != nil {
		return nil, fmt.Errorf("run: wait task: %w", err)
	}
	start := time.Now()
	if err := task.Start(ctx); err != nil {
		res.Reason, res.Error = ReasonError, cleanTaskError(err)
		log.Info("job failed to start", "err", err)
		return res, fmt.Errorf("run: start task: %w", err)
	}
	sp.mark("start")
	log.Debug("job started", "image", job.Image, "args", job.Args)
	if job.OnStart != nil {
		job.OnStart(int(task.Pid()))
	}
	var tl *tails
	if logDir != "" {
		tl = startTails(logDir, stdout, stderr)
		defer tl.halt()
	}
	f := &follower{s: s, log: log, jobID: job.ID, task: task, statusC: statusC, res: res, start: start, deadline: start.Add(lim.WallClock), cgroup: s.cgroupPath(id),
		jobDir: jobDir, logDir: logDir, tails: tl, stdout: stdout, stderr: stderr, output: job.Output, deleteTask: deleteTask, phase: sp.mark}
	res, detached, err := f.follow(ctx, bg)
	if detached {
		cleanups = nil // the job goes on; the next process re-attaches
		s.detached.Add(1)
		return nil, ErrDetached
	}
	if err != nil {
		return nil, err
	}
	cleanup()
	sp.mark("cleanup")
	res.trace = sp
	log.Debug("job timings", sp.logArgs()...)
	log.Info("job finished", "reason", res.Reason, "exit", res.ExitCode, "cpu", res.CPUTime,
		"peak_memory", res.PeakMemory, "oom_kills", res.OOMKills, "wall", res.Wall)
	return res, nil
}

// follower sees a started task to its end (Run's and Reattach's).
type follower struct {
	s          *Sandbox
	log        *slog.Logger
	jobID      string
	task       containerd.Task
	statusC    <-chan containerd.ExitStatus
	res        *Result
	start      time.Time // when the task started: Wall counts from it
	deadline   time.Time // the wall clock's end
	jobDir     string
	logDir     string // "": the streams come through FIFOs, not files
	tails      *tails
	stdout     *capWriter
	stderr     *capWriter
	output     io.Writer
	deleteTask func()
	phase      func(string)
	cgroup     string // the job's cgroup path (cgroupPath)
}

// follow waits for the task's exit, its wall clock or ctx, then reads its
// usage, lets its streams end, records the end (streams to files: a job
// the next start may re-attach), deletes the task and collects /out. When
// ctx is cancelled with the cause ErrDetach and the streams go to files,
// the task is left running and detached is true.
func (f *follower) follow(ctx, bg context.Context) (res *Result, detached bool, err error) {
	res, task, log := f.res, f.task, f.log
	timer := time.NewTimer(time.Until(f.deadline))
	defer timer.Stop()
	var status containerd.ExitStatus
	kill := func(why Reason) {
		res.Reason = why
		if err := task.Kill(bg, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
			log.Warn("kill job", "err", err)
		}
		status = <-f.statusC
	}
	select {
	case status = <-f.statusC:
	case <-timer.C:
		kill(ReasonTimeout)
	case <-ctx.Done():
		if f.logDir != "" && errors.Is(context.Cause(ctx), ErrDetach) {
			f.tails.halt()
			log.Info("job detached: it runs on until the next start re-attaches it")
			return nil, true, nil
		}
		kill(ReasonKilled)
	}
	res.Wall = time.Since(f.start)
	code, _, err := status.Result()
	if err != nil {
		// containerd lost the task's shim (killed, crashed): the exit
		// is unknown and nothing supervises the job's processes. End
		// them before the caller hears of it (containerd's own cleanup
		// of a dead shim does too, a moment later).
		log.Warn("the job's containerd shim died: ending the job", "err", err)
		if kerr := killCgroup(f.cgroup, 10*time.Second); kerr != nil {
			log.Warn("end the processes of a job whose shim died", "cgroup", f.cgroup, "err", kerr)
		}
		return nil, false, fmt.Errorf("run: %w (%v)", ErrShimDied, err)
	}
	res.ExitCode = int(code)

	f.phase("run")
	if err := f.s.readMetrics(bg, task, res); err != nil {
		log.Warn("read job metrics", "err", err)
	}
	if res.Reason == "" {
		res.Reason = ReasonExited
		if res.OOMKills > 0 {
			res.Reason = ReasonOOM
		}
	}
	f.phase("metrics")
	if f.logDir == "" {
		// Let the streams drain before the task is deleted: Delete
		// cancels the stream copies that have not opened their FIFOs
		// yet, which loses the output of a short job on a busy machine.
		// The job has exited, so the shim closes its ends and the copies
		// finish; the bound is for a shim that does not.
		drained := make(chan struct{})
		go func() { task.IO().Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(10 * time.Second):
			log.Warn("job output streams did not drain in 10s")
		}
	}
	if f.logDir != "" {
		// The task holds the job's end until it is deleted: record it
		// first, for the next start if this process dies before the
		// caller has the Result (endfile.go).
		if err := writeEnd(f.jobDir, res, time.Now()); err != nil {
			log.Warn("record the job's end", "err", err)
		}
	}
	f.phase("streams")
	// Deleting the task closes the logger's streams; it writes the
	// totals and ends (the shim waits for it).
	f.deleteTask()
	f.phase("delete")
	if h := taskDeletedHook; h != nil && f.logDir != "" && h(f.jobID, f.jobDir) {
		f.tails.halt()
		return nil, true, nil
	}
	res, err = f.finish()
	return res, false, err
}

// finish collects what a job left after its task was deleted: the stream
// counts (from the logger's done file when the streams go to files) and /out.
func (f *follower) finish() (*Result, error) {
	res, log := f.res, f.log
	res.StdoutBytes, res.StdoutTruncated = f.stdout.count()
	res.StderrBytes, res.StderrTruncated = f.stderr.count()
	if f.logDir != "" {
		if !f.tails.wait(15 * time.Second) {
			log.Warn("job logger did not finish in 15s")
		}
		if o, e, ok := readDone(f.logDir); ok {
			res.StdoutBytes, res.StdoutTruncated = o, o > f.stdout.cap
			res.StderrBytes, res.StderrTruncated = e, e > f.stderr.cap
		}
	}

	out, err := tarDir(filepath.Join(f.jobDir, "fs", "out"), f.output)
	if err != nil {
		return nil, fmt.Errorf("run: collect /out: %w", err)
	}
	res.Output = out
	f.phase("out")
	return res, nil
}

// specOpts are the OCI spec options of a job: the isolation defaults and
// the contract's limits.
func (s *Sandbox) specOpts(img containerd.Image, job Job, lim Limits, jobDir string, remap bool) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithHostname("sandbox"),
		oci.WithRootFSReadonly(),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		seccomp.WithDefaultProfile(),
		oci.WithMemoryLimit(uint64(lim.MemoryBytes)),
		oci.WithPidsLimit(lim.Pids),
		oci.WithCPUCFS(lim.CPUMillis*cfsPeriod/1000, cfsPeriod),
		oci.WithMounts([]specs.Mount{
			{Destination: "/tmp", Type: "bind", Source: filepath.Join(jobDir, "fs", "scratch"), Options: []string{"rbind", "rw", "nosuid", "nodev"}},
			{Destination: "/out", Type: "bind", Source: filepath.Join(jobDir, "fs", "out"), Options: []string{"rbind", "rw", "nosuid", "nodev"}},
		}),
		withFreshNetNS,
	}
	if job.InputDir != "" {
		// A plain bind of the job's own copy (no rbind: nothing is mounted
		// under it), read-only and without suid, devices or exec.
		opts = append(opts, oci.WithMounts([]specs.Mount{
			{Destination: "/in", Type: "bind", Source: filepath.Join(jobDir, "in"), Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
		}))
	}
	if s.memswOK {
		// No swap: memory+swap limit equal to the memory limit.
		opts = append(opts, oci.WithMemorySwap(lim.MemoryBytes))
	}
	if len(job.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(job.Args...))
	}
	if len(job.Env) > 0 {
		opts = append(opts, oci.WithEnv(job.Env))
	}
	if remap {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: s.cfg.UserNSBase, Size: 65536}}
		opts = append(opts, oci.WithUserNamespace(m, m))
	}
	return opts
}

// withFreshNetNS makes sure the job gets a new, empty network namespace (only
// lo) whatever the defaults say.
func withFreshNetNS(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path = ""
			return nil
		}
	}
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	return nil
}

// mountScratch mounts a tmpfs of size bytes at jobDir/fs holding scratch/
// (the job's /tmp) and out/ (its /out).
func (s *Sandbox) mountScratch(jobDir string, size int64, remap bool) error {
	fs := filepath.Join(jobDir, "fs")
	if err := os.MkdirAll(fs, 0o700); err != nil {
		return fmt.Errorf("job dir: %w", err)
	}
	opts := fmt.Sprintf("size=%d,mode=0755", size)
	if err := syscall.Mount("tmpfs", fs, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		os.RemoveAll(jobDir)
		return fmt.Errorf("mount scratch tmpfs: %w", err)
	}
	uid := 0
	if remap {
		uid = int(s.cfg.UserNSBase)
	}
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"scratch", 0o777 | os.ModeSticky}, {"out", 0o777}} {
		p := filepath.Join(fs, d.name)
		err := os.Mkdir(p, 0o700)
		if err == nil {
			err = os.Chmod(p, d.mode)
		}
		if err == nil {
			err = os.Lchown(p, uid, uid)
		}
		if err != nil {
			removeJobDir(jobDir)
			return fmt.Errorf("scratch dir %s: %w", d.name, err)
		}
	}
	return nil
}

// removeJobDir unmounts the scratch tmpfs (if mounted) and removes jobDir.
func removeJobDir(jobDir string) error {
	fs := filepath.Join(jobDir, "fs")
	for i := 0; i < 10; i++ {
		err := syscall.Unmount(fs, syscall.MNT_DETACH)
		if err != nil {
			break // EINVAL: not (or no longer) a mount point
		}
	}
	return os.RemoveAll(jobDir)
}

// readMetrics fills CPU time, peak memory and OOM kills from the task's
// cgroup (v1 metrics, as the runc shim of containerd 1.6/1.7 reports them).
func (s *Sandbox) readMetrics(ctx context.Context, task containerd.Task, res *Result) error {
	m, err := task.Metrics(ctx)
	if err != nil {
		return err
	}
	if m.Data == nil {
		return errors.New("no metrics data")
	}
	var st cgroupsv1.Metrics
	if err := st.Unmarshal(m.Data.GetValue()); err != nil {
		return fmt.Errorf("metrics %s: %w", m.Data.GetTypeUrl(), err)
	}
	if st.CPU != nil && st.CPU.Usage != nil {
		res.CPUTime = time.Duration(st.CPU.Usage.Total)
	}
	if st.Memory != nil && st.Memory.Usage != nil {
		res.PeakMemory = int64(st.Memory.Usage.Max)
	}
	if st.MemoryOomControl != nil {
		res.OOMKills = int64(st.MemoryOomControl.OomKill)
	}
	return nil
}

// deleteTask deletes a task, killing it first only if it still runs: runsc
// fails to kill a sandbox that has exited ("sandbox is not running"), and
// with containerd.WithProcessKill that failure leaves the task behind.
func deleteTask(ctx context.Context, task containerd.Task) error {
	_, err := task.Delete(ctx)
	if errdefs.IsFailedPrecondition(err) { // still running
		_, err = task.Delete(ctx, containerd.WithProcessKill)
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// removeSnapshot removes a job's snapshot if it exists.
func (s *Sandbox) removeSnapshot(ctx context.Context, key string) {
	sn := s.client.SnapshotService(s.cfg.Snapshotter)
	if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		s.log.Warn("remove snapshot", "snapshot", key, "err", err)
	}
}

// cleanTaskError shortens runc's start errors to what a buyer needs.
func cleanTaskError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "exec: "); i >= 0 {
		return strings.TrimSuffix(msg[i:], ": unknown")
	}
	return msg
}
