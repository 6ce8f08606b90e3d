package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
)

// A job's container belongs to containerd, not to the daemon. With
// Config.LogBinary set, its streams go to files (logger.go), so a job can
// outlive the process that started it:
//
//   - Run's context cancelled with the cause ErrDetach leaves the job
//     running and returns ErrDetached (an upgrade: the daemon stops, the
//     job does not). A crash leaves it running too.
//   - The next New, given WithKeep, adopts the containers of dead owners
//     whose job the caller keeps (Reconcile removes every other one as
//     before), and Reattach follows such a job to its end and returns the
//     same Result as Run, its streams read from the start of the files.
//   - Discard removes an adopted job nobody re-attaches.
//   - A job whose task was deleted after its end was recorded, but whose
//     Result its caller never got (a crash in between), is adopted and
//     re-attached from that record (endfile.go).

// ErrDetach is the cause to cancel Run's or Reattach's context with to
// leave the job running for the next process (context.WithCancelCause).
var ErrDetach = errors.New("detach: leave the job running for the next start")

// ErrDetached is what Run and Reattach return for a job they left running.
var ErrDetached = errors.New("job detached, still running")

// ErrNoJob: Reattach found no container of the job.
var ErrNoJob = errors.New("no such job")

// labelWallClock is a job container's wall clock (a Go duration), which a
// re-attaching process enforces from the container's creation.
const (
	labelWallClock = "blackbox.sandbox/wall-clock"
	labelRuntime   = "blackbox.sandbox/runtime" // the OCI runtime, for the Result
)

// Option changes how New sets a Sandbox up.
type Option func(*Sandbox)

// WithKeep makes New's Reconcile adopt, instead of removing, the
// containers crashed or stopped owners left whose job ID (Job.ID) keep
// reports true: Reattach then follows them, Discard removes them.
func WithKeep(keep func(jobID string) bool) Option {
	return func(s *Sandbox) { s.keep = keep }
}

// adopt takes over a dead owner's container whose job is kept: the labels
// of the container and its snapshot name this Sandbox as owner, so that
// no Reconcile (ours or another live owner's) removes it. It reports
// whether the container was adopted.
func (s *Sandbox) adopt(ctx context.Context, c containerd.Container, labels map[string]string) bool {
	job := labels[labelJob]
	if s.keep == nil || job == "" || !s.keep(job) {
		return false
	}
	if _, err := c.Task(ctx, nil); err != nil {
		// No task: nothing to follow, unless the previous process
		// deleted it after recording the job's end (endfile.go).
		if !errdefs.IsNotFound(err) {
			s.log.Warn("not adopting a kept job: its task cannot be read", "container", c.ID(), "job", job, "err", err)
			return false
		}
		dir := labels[labelJobDir]
		if dir == "" || !strings.HasPrefix(filepath.Base(dir), "bb-") {
			s.log.Warn("not adopting a kept job: no task and no job directory", "container", c.ID(), "job", job)
			return false
		}
		if _, err := readEnd(dir); err != nil {
			s.log.Warn("not adopting a kept job: its task is gone and its end was not recorded", "container", c.ID(), "job", job, "err", err)
			return false
		}
	}
	if _, err := c.SetLabels(ctx, map[string]string{labelOwnerLock: s.lockPath}); err != nil {
		s.log.Warn("adopt job container", "container", c.ID(), "job", job, "err", err)
		return false
	}
	sn := s.client.SnapshotService(s.cfg.Snapshotter)
	if info, err := sn.Stat(ctx, c.ID()); err == nil {
		info.Labels[labelOwnerLock] = s.lockPath
		if _, err := sn.Update(ctx, info, "labels."+labelOwnerLock); err != nil {
			s.log.Debug("relabel adopted snapshot", "snapshot", c.ID(), "err", err)
		}
	}
	s.mu.Lock()
	s.adopted[c.ID()] = labels[labelJobDir]
	s.mu.Unlock()
	s.log.Info("adopted a running job left by the previous process", "container", c.ID(), "job", job)
	return true
}

// isAdopted reports whether a container ID or job directory is an adopted job's.
func (s *Sandbox) isAdopted(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.adopted[name]; ok {
		return true
	}
	for _, dir := range s.adopted {
		if dir != "" && filepath.Base(dir) == name {
			return true
		}
	}
	return false
}

// Adopted lists the job IDs of the containers New adopted that were not
// re-attached or discarded yet.
func (s *Sandbox) Adopted(ctx context.Context) []string {
	ctx = s.ctx(ctx)
	s.mu.Lock()
	ids := make([]string, 0, len(s.adopted))
	for id := range s.adopted {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var jobs []string
	for _, id := range ids {
		c, err := s.client.LoadContainer(ctx, id)
		if err != nil {
			continue
		}
		if l, err := c.Labels(ctx); err == nil && l[labelJob] != "" {
			jobs = append(jobs, l[labelJob])
		}
	}
	return jobs
}

// findJob returns this Sandbox's container of job id (its own or adopted).
func (s *Sandbox) findJob(ctx context.Context, id string) (containerd.Container, map[string]string, error) {
	list, err := s.client.Containers(ctx, fmt.Sprintf("labels.%q==%q", labelJob, id))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list containers: %v", ErrUnavailable, err)
	}
	for _, c := range list {
		labels, err := c.Labels(ctx)
		if err != nil || labels[labelJob] != id || labels[labelOwnerLock] != s.lockPath {
			continue
		}
		return c, labels, nil
	}
	return nil, nil, fmt.Errorf("%w: %s", ErrNoJob, id)
}

// Discard kills and removes an adopted job's container (no contract wants
// it any more). A job already gone succeeds.
func (s *Sandbox) Discard(ctx context.Context, jobID string) error {
	ctx = s.ctx(ctx)
	c, labels, err := s.findJob(ctx, jobID)
	if errors.Is(err, ErrNoJob) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.adopted, c.ID())
	s.mu.Unlock()
	s.log.Info("removing a job no contract resumes", "container", c.ID(), "job", jobID)
	return s.removeContainer(ctx, c, labels[labelJobDir])
}

// Reattach follows the running (or since exited) job jobID that this
// Sandbox adopted at New, or that Run left detached in this process, to its
// end, and returns the same Result as Run would have: the exit code, the
// usage from the task's cgroup, /out as a tar into job.Output, and the
// streams read from the start of the logger's files into job.Stdout and
// job.Stderr. Only job.ID, the writers and OnStart (told the job's init
// process) of job are used; the wall clock is the one the job was created
// with, counted from the container's creation. Cancelling ctx kills the
// job (with ErrDetach: leaves it running, ErrDetached). ErrNoJob when there is no such container.
// Nothing of the job stays behind after a Result.
func (s *Sandbox) Reattach(ctx context.Context, job Job) (*Result, error) {
	if job.ID == "" {
		return nil, fmt.Errorf("%w: reattach needs the job's ID", ErrBadJob)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.running.Add(1)
	s.mu.Unlock()
	defer s.running.Done()
	ctx = s.ctx(ctx)
	bg := context.WithoutCancel(ctx)
	c, labels, err := s.findJob(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	id := c.ID()
	log := s.log.With("container", id, "job", job.ID)
	jobDir := labels[labelJobDir]
	if jobDir == "" || !strings.HasPrefix(filepath.Base(jobDir), "bb-") {
		return nil, fmt.Errorf("reattach %s: container %s has no job directory", job.ID, id)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reattach %s: %w", job.ID, err)
	}
	s.mu.Lock()
	s.inUse[info.Image]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.inUse[info.Image]--; s.inUse[info.Image] <= 0 {
			delete(s.inUse, info.Image)
		}
		s.mu.Unlock()
	}()
	keep := false
	defer func() {
		if keep {
			return
		}
		s.mu.Lock()
		delete(s.adopted, id)
		s.mu.Unlock()
		if err := s.removeContainer(bg, c, jobDir); err != nil {
			log.Warn("remove re-attached job", "err", err)
		}
	}()
	wall, err := time.ParseDuration(labels[labelWallClock])
	if err != nil || wall <= 0 {
		return nil, fmt.Errorf("reattach %s: container %s has no wall clock", job.ID, id)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return s.reattachEnded(job, id, jobDir, labels, wall, log)
	}
	if err != nil {
		return nil, fmt.Errorf("reattach %s: task: %w", job.ID, err)
	}
	statusC, err := task.Wait(bg)
	if err != nil {
		return nil, fmt.Errorf("reattach %s: wait task: %w", job.ID, err)
	}
	if st, err := task.Status(ctx); err == nil && st.Status == containerd.Created {
		// The previous process died between the task's create and its
		// start: the job never ran. It starts now, within its wall clock
		// (counted from the container's creation), instead of waiting
		// for an exit that never comes.
		log.Info("re-attached job was created but never started: starting it")
		if err := task.Start(ctx); err != nil {
			return nil, fmt.Errorf("reattach %s: start task: %w", job.ID, err)
		}
	}
	stdout, stderr := s.streams(job)
	logDir := filepath.Join(jobDir, "log")
	tl := startTails(logDir, stdout, stderr)
	defer tl.halt()
	res := &Result{Container: id, ExitCode: -1, Limits: Limits{WallClock: wall}, Runtime: labels[labelRuntime]}
	deleted := false
	f := &follower{s: s, log: log, jobID: job.ID, task: task, statusC: statusC, res: res, start: info.CreatedAt, deadline: info.CreatedAt.Add(wall),
		cgroup: s.cgroupPath(id), jobDir: jobDir, logDir: logDir, tails: tl, stdout: stdout, stderr: stderr, output: job.Output, phase: func(string) {},
		deleteTask: func() {
			if !deleted {
				deleted = true
				if err := deleteTask(bg, task); err != nil {
					log.Warn("delete task", "err", err)
				}
			}
		}}
	log.Info("job re-attached", "age", time.Since(info.CreatedAt).Round(time.Millisecond))
	if job.OnStart != nil {
		// A service's port is reached through its init process's netns.
		job.OnStart(int(task.Pid()))
	}
	res, detached, err := f.follow(ctx, bg)
	if detached {
		keep = true
		s.detached.Add(1)
		return nil, ErrDetached
	}
	if err != nil {
		return nil, err
	}
	log.Info("job finished", "reason", res.Reason, "exit", res.ExitCode, "cpu", res.CPUTime,
		"peak_memory", res.PeakMemory, "oom_kills", res.OOMKills, "wall", res.Wall)
	return res, nil
}

// reattachEnded builds the Result of a job whose task the previous process
// deleted after recording the job's end (endfile.go) but before its caller
// had the Result: the end from the file, the streams from the logger's
// complete files, /out from the scratch tmpfs. Reattach removes the
// container and job dir after.
func (s *Sandbox) reattachEnded(job Job, id, jobDir string, labels map[string]string, wall time.Duration, log *slog.Logger) (*Result, error) {
	end, err := readEnd(jobDir)
	if err != nil {
		return nil, fmt.Errorf("reattach %s: the task is gone and %v", job.ID, err)
	}
	stdout, stderr := s.streams(job)
	logDir := filepath.Join(jobDir, "log")
	res := &Result{Container: id, Limits: Limits{WallClock: wall}, Runtime: labels[labelRuntime]}
	end.apply(res)
	f := &follower{s: s, log: log, jobID: job.ID, res: res, jobDir: jobDir, logDir: logDir,
		tails: startTails(logDir, stdout, stderr), stdout: stdout, stderr: stderr, output: job.Output, phase: func(string) {}}
	defer f.tails.halt()
	log.Info("job re-attached after its end", "ended", end.Ended, "ago", time.Since(end.Ended).Round(time.Millisecond))
	res, err = f.finish()
	if err != nil {
		return nil, err
	}
	log.Info("job finished", "reason", res.Reason, "exit", res.ExitCode, "cpu", res.CPUTime,
		"peak_memory", res.PeakMemory, "oom_kills", res.OOMKills, "wall", res.Wall)
	return res, nil
}

// streams are the job's stdout and stderr writers, capped at its output
// cap (the Sandbox's when it sets none).
func (s *Sandbox) streams(job Job) (stdout, stderr *capWriter) {
	outCap := s.outputCap(job)
	return &capWriter{w: job.Stdout, cap: outCap}, &capWriter{w: job.Stderr, cap: outCap}
}

// outputCap is the job's output cap, the Sandbox's when it sets none.
func (s *Sandbox) outputCap(job Job) int64 {
	if job.OutputCap > 0 {
		return job.OutputCap
	}
	return s.cfg.OutputCap
}

// tails copies a job's two log files, from their start, to the writers as
// the logger writes them, until the logger has finished (its done file)
// or halt.
type tails struct {
	stop     chan struct{}
	stopOnce sync.Once
	// ending is closed by wait: the job has ended, the logger's done file
	// is due any moment, and the files are looked at every tailEndPoll.
	ending  chan struct{}
	endOnce sync.Once
	wg      sync.WaitGroup
	poll    time.Duration // tailPoll (a test's own)
}

func startTails(dir string, stdout, stderr io.Writer) *tails {
	return startTailsEvery(dir, stdout, stderr, tailPoll)
}

func startTailsEvery(dir string, stdout, stderr io.Writer, poll time.Duration) *tails {
	t := &tails{stop: make(chan struct{}), ending: make(chan struct{}), poll: poll}
	for name, w := range map[string]io.Writer{logStdout: stdout, logStderr: stderr} {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.tail(dir, filepath.Join(dir, name), w)
		}()
	}
	return t
}

// tailPoll is how often a log file is looked at for more while the job
// runs; tailEndPoll once it has ended. A job's last bytes and the done
// file come within milliseconds of its end: at tailPoll alone, every job
// waited 50 ms on average for its streams to be declared done.
const (
	tailPoll    = 100 * time.Millisecond
	tailEndPoll = 2 * time.Millisecond
)

func (t *tails) tail(dir, path string, w io.Writer) {
	poll, ending := t.poll, t.ending
	timer := time.NewTimer(poll)
	defer timer.Stop()
	// pause waits for the next look; false: halted.
	pause := func() bool {
		timer.Reset(poll)
		select {
		case <-t.stop:
			return false
		case <-ending:
			poll, ending = tailEndPoll, nil
		case <-timer.C:
		}
		return true
	}
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil && !pause() {
			return
		}
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			continue
		}
		if err != nil && err != io.EOF {
			return
		}
		if _, _, ok := readDone(dir); ok {
			// Nothing is written after the done file: read the rest.
			io.CopyBuffer(w, f, buf)
			return
		}
		if !pause() {
			return
		}
	}
}

// wait waits up to d for both files to be read to their end; the job has
// ended, so they are looked at every tailEndPoll from now.
func (t *tails) wait(d time.Duration) bool {
	t.endOnce.Do(func() { close(t.ending) })
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		t.halt()
		return false
	}
}

// halt stops the copies and waits for them.
func (t *tails) halt() {
	if t == nil {
		return
	}
	t.stopOnce.Do(func() { close(t.stop) })
	t.wg.Wait()
}
