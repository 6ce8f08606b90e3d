package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// A detachable job's end (exit code, reason, usage) lives in its task
// until the task is deleted. A daemon killed after the delete and before
// the caller persisted the Result would lose a job that finished: the
// next start finds a container without a task. So before deleting the
// task, the follower writes the end durably to endFile in the job's
// directory; the next start adopts a kept container without a task whose
// job dir holds a valid end file, and Reattach builds the Result from it,
// the logger's complete files and /out.

// endFile is the name of the job's end record in its job directory (on
// the state directory's disk, beside the tmpfs fs/).
const endFile = "end.json"

// endVersion is the end file's format.
const endVersion = 1

// jobEnd is what endFile holds.
type jobEnd struct {
	Version    int       `json:"version"`
	ExitCode   int       `json:"exit_code"`
	Reason     Reason    `json:"reason"`
	CPUNanos   int64     `json:"cpu_ns"`
	PeakMemory int64     `json:"peak_memory_bytes"`
	OOMKills   int64     `json:"oom_kills"`
	WallNanos  int64     `json:"wall_ns"`
	Ended      time.Time `json:"ended"`
}

// writeEnd records res's end in jobDir, durably (atomic replace, fsync).
func writeEnd(jobDir string, res *Result, ended time.Time) error {
	b, err := json.Marshal(jobEnd{Version: endVersion, ExitCode: res.ExitCode, Reason: res.Reason,
		CPUNanos: int64(res.CPUTime), PeakMemory: res.PeakMemory, OOMKills: res.OOMKills,
		WallNanos: int64(res.Wall), Ended: ended.UTC()})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(jobDir, endFile), b, 0o600)
}

// maxEndFile bounds what readEnd reads: the record is ~200 bytes.
const maxEndFile = 4 << 10

// readEnd reads jobDir's end file. A missing file is an error wrapping
// os.ErrNotExist; anything not a valid record is an error saying why.
func readEnd(jobDir string) (*jobEnd, error) {
	f, err := os.Open(filepath.Join(jobDir, endFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEndFile+1))
	if err != nil {
		return nil, fmt.Errorf("end file: %w", err)
	}
	return decodeEnd(b)
}

// decodeEnd parses and checks an end record.
func decodeEnd(b []byte) (*jobEnd, error) {
	if len(b) > maxEndFile {
		return nil, errors.New("end file: too large")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e jobEnd
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("end file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("end file: trailing data")
	}
	switch {
	case e.Version != endVersion:
		return nil, fmt.Errorf("end file: version %d, want %d", e.Version, endVersion)
	case e.Reason != ReasonExited && e.Reason != ReasonTimeout && e.Reason != ReasonOOM && e.Reason != ReasonKilled:
		return nil, fmt.Errorf("end file: reason %q", e.Reason)
	case e.ExitCode < -1:
		return nil, fmt.Errorf("end file: exit code %d", e.ExitCode)
	case e.CPUNanos < 0 || e.PeakMemory < 0 || e.OOMKills < 0 || e.WallNanos < 0:
		return nil, errors.New("end file: negative usage")
	case e.Ended.IsZero():
		return nil, errors.New("end file: no end time")
	}
	return &e, nil
}

// apply fills res from the record.
func (e *jobEnd) apply(res *Result) {
	res.ExitCode, res.Reason = e.ExitCode, e.Reason
	res.CPUTime, res.PeakMemory, res.OOMKills = time.Duration(e.CPUNanos), e.PeakMemory, e.OOMKills
	res.Wall = time.Duration(e.WallNanos)
}

// taskDeletedHook, when set (tests), is called by the follower right after
// it wrote the end file and deleted the task of job jobID; true makes the
// follower stop there as if the process had died: nothing more is done,
// the container and job dir stay, and Run returns ErrDetached.
var taskDeletedHook func(jobID, jobDir string) bool
