// Package health is the one answer to "can this node earn?": a list of
// checks, each ok, warn or fail, with what was found and how to fix it —
// the sandbox, payments (chain source, its sync, the wallet), the clock,
// the disk and reachability. `blackbox doctor`, `blackbox status`, the
// daemon's /healthz and serve's payment.required all read these checks, so
// they cannot disagree about what the node needs.
package health

import (
	"slices"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// Status of a Check: ok, warn or fail. A Fail means the node cannot earn
// until it is fixed; a Warn means it can, with less (or with a risk the
// detail names).
type Status = sandbox.Status

// Check statuses.
const (
	OK   = sandbox.StatusOK
	Warn = sandbox.StatusWarn
	Fail = sandbox.StatusFail
)

// Check is one thing the node needs to earn: its name, status, what was
// found (Detail) and, when not ok, what to do (Fix). It is the sandbox
// doctor's finding, so that its checks join these as they are.
type Check = sandbox.Check

// Report is the answer: the node can earn when no check fails.
type Report struct {
	CanEarn bool    `json:"can_earn"`
	Checks  []Check `json:"checks"`
	// Reasons are the failed checks as "name: detail", most important
	// (first checked) first.
	Reasons []string `json:"reasons,omitempty"`
}

// NewReport sums checks up.
func NewReport(checks []Check) Report {
	r := Report{CanEarn: true, Checks: checks}
	if r.Checks == nil {
		r.Checks = []Check{}
	}
	for _, c := range checks {
		if c.Status == Fail {
			r.CanEarn = false
			r.Reasons = append(r.Reasons, c.Name+": "+c.Detail)
		}
	}
	return r
}

// Summary is the one-line answer `status` shows: "yes", or "no: " and the
// reasons.
func (r Report) Summary() string {
	if r.CanEarn {
		return "yes"
	}
	return "no: " + strings.Join(r.Reasons, "; ")
}

// FromSandbox takes the sandbox's own diagnosis (sandbox.Diagnose, which
// runs a real probe job) as checks. Its "disk" check is about the job
// scratch under sandbox.state_dir and is named so, next to Disk's.
func FromSandbox(checks []sandbox.Check) []Check {
	out := slices.Clone(checks)
	for i := range out {
		if out[i].Name == "disk" {
			out[i].Name = "scratch disk"
		}
	}
	return out
}
