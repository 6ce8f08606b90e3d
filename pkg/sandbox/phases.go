package sandbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
)

// Phase is one step of a job's life in Run and how long it took: the
// trace a benchmark prints to show where a job's time goes.
type Phase struct {
	Name string
	Took time.Duration
}

// Phases are the steps of a job, in order (Run's; a re-attached job has
// none):
//
//	setup       checks, runtime options, the image record
//	scratch     the scratch tmpfs (and /in's copy)
//	lease       a lease that keeps the new snapshot from the collector
//	snapshot    the job's writable snapshot (and, once per image, its remapped parent)
//	spec        the OCI spec
//	container   the container record
//	task        the task: the shim (started, or the shared one reached) and the runtime's create
//	start       the runtime's start
//	run         the job itself, to its exit
//	metrics     usage from the task's cgroup
//	streams     the streams drained (or the end recorded)
//	delete      the task deleted (runtime delete, rootfs unmounted)
//	out         /out collected
//	cleanup     container, snapshot and scratch removed
func (r *Result) Phases() []Phase {
	if r.trace == nil {
		return nil
	}
	return r.trace.list
}

// spans records a job's phases as it goes.
type spans struct {
	last time.Time
	list []Phase
}

func newSpans() *spans { return &spans{last: time.Now()} }

// mark ends the phase name now.
func (s *spans) mark(name string) {
	now := time.Now()
	s.list = append(s.list, Phase{name, now.Sub(s.last)})
	s.last = now
}

// opt is a NewContainerOpts that marks name when NewContainer applies it.
func (s *spans) opt(name string) containerd.NewContainerOpts {
	return func(context.Context, *containerd.Client, *containers.Container) error {
		s.mark(name)
		return nil
	}
}

// logArgs are the phases as slog key-value pairs.
func (s *spans) logArgs() []any {
	args := make([]any, 0, len(s.list))
	for _, p := range s.list {
		args = append(args, slog.Duration(p.Name, p.Took))
	}
	// In a group: a phase's name (container, ...) is not the log's key.
	return []any{slog.Group("took", args...)}
}
