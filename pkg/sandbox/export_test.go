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
