package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// Jobs outlive the daemon (contract/resume.go, sandbox/reattach.go): the
// sandbox logs jobs' streams through this binary run by containerd's shim,
// keeps at start the containers of the contracts the seller resumes, and
// the runner re-attaches them.

var _ contract.Reattacher = sandboxRunner{}

// logBinary is this program's path, for the sandbox's job logger.
func logBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		return p
	}
	return exe
}

// detachable is ctx for the sandbox: cancelled as ctx is, with the
// sandbox's ErrDetach when the contract engine detaches the job.
func detachable(ctx context.Context) (context.Context, func()) {
	sctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		if errors.Is(cause, contract.ErrDetach) {
			cause = sandbox.ErrDetach
		}
		cancel(cause)
	})
	return sctx, func() { stop(); cancel(nil) }
}

// Reattach implements contract.Reattacher.
func (r sandboxRunner) Reattach(ctx context.Context, spec contract.RunSpec) (*contract.RunResult, error) {
	sctx, done := detachable(ctx)
	defer done()
	res, err := r.sb.Reattach(sctx, sandbox.Job{ID: spec.ContractID, Stdout: spec.Stdout, Stderr: spec.Stderr, Output: spec.Output, OnStart: spec.OnStart})
	if errors.Is(err, sandbox.ErrDetached) {
		return nil, contract.ErrDetached
	}
	if err != nil {
		return nil, err
	}
	return runResult(res), nil
}

// Adopted implements contract.Reattacher.
func (r sandboxRunner) Adopted(ctx context.Context) []string { return r.sb.Adopted(ctx) }

// Discard implements contract.Reattacher.
func (r sandboxRunner) Discard(ctx context.Context, contractID string) error {
	return r.sb.Discard(ctx, contractID)
}
