package sandbox

// CrashAfterTaskDeleted makes every follower of a job whose ID crash
// reports true stop right after it recorded the job's end and deleted its
// task, as a daemon killed there would (Run returns ErrDetached and leaves
// the container and job dir); its jobDir is passed on. It returns the
// function that removes the hook.
func CrashAfterTaskDeleted(crash func(jobID, jobDir string) bool) (restore func()) {
	taskDeletedHook = crash
	return func() { taskDeletedHook = nil }
}

// EndFile is the name of a job's end record in its job directory.
const EndFile = endFile

// CachedSeccompPrograms is how many compiled seccomp programs the crun
// cache holds.
func (s *Sandbox) CachedSeccompPrograms() int {
	s.bpf.mu.Lock()
	defer s.bpf.mu.Unlock()
	return len(s.bpf.m)
}

// SharedShims reports, per shared shim group, whether its anchor is up
// and how many jobs it serves now.
func (s *Sandbox) SharedShims() (up []bool, jobs []int) { return s.sharedShims() }

// SharedShimUp reports whether the first shared shim group is up.
func (s *Sandbox) SharedShimUp() bool {
	up, _ := s.sharedShims()
	return len(up) > 0 && up[0]
}

// SeccompFromCache is how many jobs were given a kept seccomp program.
func (s *Sandbox) SeccompFromCache() int64 { return s.bpf.hits.Load() }
