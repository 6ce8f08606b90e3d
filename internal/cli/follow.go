package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// A job is followed by waiting on its changes at the node (each request
// ends when the job changes, or after waitFor) and telling a sink what
// changed: a new state, phase or seller, new output, the end. The output
// files are read at least every pollEvery while streams are followed.
const (
	pollEvery = 100 * time.Millisecond
	waitFor   = 20 * time.Second
)

// sink is what follow tells about a job.
type sink interface {
	// progress: the job's state, phase or seller changed.
	progress(j *contract.JobStatus, elapsed time.Duration)
	// output: the job wrote data on stream ("stdout" or "stderr").
	output(j *contract.JobStatus, stream string, data []byte)
}

// follow waits on job id until it ends and returns its final status. With
// streams it passes on what the job writes to them as it arrives.
func (a *App) follow(ctx context.Context, id string, s sink, streams ...string) (*contract.JobStatus, error) {
	c := a.client()
	start := time.Now()
	var last string
	// read is how much of each stream of the current contract's results
	// was passed on (a new attempt writes a new result dir).
	read, dir := map[string]int64{}, ""
	wait := waitFor
	if len(streams) > 0 {
		wait = pollEvery
	}
	var seen time.Time // the job's Updated when last seen
	for {
		asked := time.Now()
		job, err := c.WaitJob(ctx, id, seen, wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil, &ExitError{Code: ExitDetached}
			}
			return nil, a.jobError(id, err)
		}
		key := fmt.Sprint(job.State, job.Phase, job.Seller, job.ContractID, fundingKey(job.Funding))
		if key != last {
			s.progress(job, time.Since(start))
			last = key
		}
		if job.ResultDir != dir {
			read, dir = map[string]int64{}, job.ResultDir
		}
		for _, name := range streams {
			if dir == "" {
				break
			}
			var buf bytes.Buffer
			read[name] = copyFrom(filepath.Join(dir, name), read[name], &buf)
			if buf.Len() > 0 {
				s.output(job, name, buf.Bytes())
			}
		}
		if jobDone(job.State) {
			return job, nil
		}
		// Unchanged at once (a daemon that does not wait): ask again after
		// pollEvery, not in a busy loop.
		pause := time.Duration(0)
		if !job.Updated.After(seen) {
			pause = pollEvery - time.Since(asked)
		}
		seen = job.Updated
		select {
		case <-ctx.Done():
			return nil, &ExitError{Code: ExitDetached}
		case <-time.After(max(pause, 0)):
		}
	}
}

// humanSink prints progress lines on w and the job's output as it is.
type humanSink struct {
	w              io.Writer // progress
	stdout, stderr io.Writer
}

func (h humanSink) progress(j *contract.JobStatus, elapsed time.Duration) {
	if h.w == nil {
		return
	}
	line := string(j.State)
	if j.Phase != "" {
		line += " (" + j.Phase + ")"
	}
	if j.Seller != "" {
		line += " on " + shortID(j.Seller.String())
	}
	if f := j.Funding; f != nil && j.Phase == contract.PhaseFund {
		line += ", " + f.String()
	}
	if n := len(j.Attempts); n > 0 && j.Attempts[n-1].Price > 0 {
		// What the contract costs in all, and the start fee in it.
		at := j.Attempts[n-1]
		line += fmt.Sprintf(", paid %d sat (contract %d sat, start fee %d sat included)", j.Paid, at.Price, at.StartFee)
	} else {
		line += fmt.Sprintf(", paid %d sat", j.Paid)
	}
	// The line carries what sellers sent: no control characters reach
	// the terminal.
	fmt.Fprintf(h.w, "[%6.1fs] %s\n", elapsed.Seconds(), cleanCell(line))
}

func (h humanSink) output(_ *contract.JobStatus, stream string, data []byte) {
	w := h.stdout
	if stream == "stderr" {
		w = h.stderr
	}
	w.Write(data)
}

// Event is one line of `submit --json` (README "Scripting submit"): every
// event has "event", "job" (empty before the node took the job) and
// "time"; the others only where they apply.
type Event struct {
	Event string    `json:"event"`
	Job   string    `json:"job,omitempty"`
	Time  time.Time `json:"time"`
	// ElapsedSeconds is the time since submit started.
	ElapsedSeconds float64 `json:"elapsed_seconds"`

	// Progress events (searching, negotiating, funding, transferring,
	// running, results, and the job's state when it has no phase).
	State      contract.JobState `json:"state,omitempty"`
	Phase      string            `json:"phase,omitempty"`
	Seller     string            `json:"seller,omitempty"`
	ContractID string            `json:"contract_id,omitempty"`
	PaidSat    *int64            `json:"paid_sat,omitempty"`
	// PriceSat is what the current contract costs in all, StartFeeSat the
	// start fee in it.
	PriceSat    int64 `json:"price_sat,omitempty"`
	StartFeeSat int64 `json:"start_fee_sat,omitempty"`
	// Funding (funding events) is where the contract's channel funding
	// is: its confirmations while the contract waits for them, or that it
	// started unconfirmed.
	Funding *contract.Funding `json:"funding,omitempty"`

	// log: one line (or the last, unterminated, part) of the job's output.
	Stream string `json:"stream,omitempty"`
	Line   string `json:"line,omitempty"`

	// done: the job ended. ExitCode is what submit exits with (the job's
	// own code, or 125 when it did not run to its end); CostSat what it
	// cost in all, StartFeeSat the start fees in it; DurationSeconds its run time on
	// the seller; Results where its results are; Status the job in full
	// (as `blackbox job ID --json`).
	ExitCode        *int                `json:"exit_code,omitempty"`
	CostSat         *int64              `json:"cost_sat,omitempty"`
	DurationSeconds float64             `json:"duration_seconds,omitempty"`
	Results         string              `json:"results,omitempty"`
	Status          *contract.JobStatus `json:"status,omitempty"`

	// error: submit failed (Message, and Code, its exit code); also
	// done's Message when the job failed.
	Message string `json:"message,omitempty"`
	Code    int    `json:"code,omitempty"`
}

// phaseEvents names a job's phases as events.
var phaseEvents = map[string]string{
	"discover": "searching", "negotiate": "negotiating", "fund": "funding",
	"transfer": "transferring", "run": "running", "results": "results",
}

// eventSink writes events as JSON lines.
type eventSink struct {
	enc   *json.Encoder
	start time.Time
	// partial holds each stream's unterminated last line.
	partial map[string][]byte
}

func newEventSink(w io.Writer) *eventSink {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &eventSink{enc: enc, start: time.Now(), partial: map[string][]byte{}}
}

func (s *eventSink) emit(e Event) {
	e.Time = time.Now().UTC()
	e.ElapsedSeconds = time.Since(s.start).Round(time.Millisecond).Seconds()
	_ = s.enc.Encode(e)
}

func (s *eventSink) progress(j *contract.JobStatus, _ time.Duration) {
	name, ok := phaseEvents[j.Phase]
	if !ok {
		name = string(j.State)
	}
	if jobDone(j.State) {
		return // done says it
	}
	paid := j.Paid
	e := Event{Event: name, Job: j.ID, State: j.State, Phase: j.Phase, ContractID: j.ContractID, PaidSat: &paid}
	if j.Seller != "" {
		e.Seller = j.Seller.String()
	}
	if n := len(j.Attempts); n > 0 {
		e.PriceSat, e.StartFeeSat = j.Attempts[n-1].Price, j.Attempts[n-1].StartFee
	}
	if j.Phase == contract.PhaseFund {
		e.Funding = j.Funding
	}
	s.emit(e)
}

func (s *eventSink) output(j *contract.JobStatus, stream string, data []byte) {
	buf := append(s.partial[stream], data...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		s.emit(Event{Event: "log", Job: j.ID, Stream: stream, Line: string(buf[:i])})
		buf = buf[i+1:]
	}
	s.partial[stream] = append([]byte(nil), buf...)
}

// done flushes unterminated output and says how the job ended.
func (s *eventSink) done(j *contract.JobStatus, results string) {
	for _, stream := range []string{"stdout", "stderr"} {
		if p := s.partial[stream]; len(p) > 0 {
			s.emit(Event{Event: "log", Job: j.ID, Stream: stream, Line: string(p)})
			delete(s.partial, stream)
		}
	}
	code, cost := exitCode(jobExit(j)), j.Paid
	e := Event{Event: "done", Job: j.ID, State: j.State, ExitCode: &code, CostSat: &cost, Message: j.Error, Status: j}
	if j.Seller != "" {
		e.Seller = j.Seller.String()
	}
	e.StartFeeSat = startFees(j)
	if j.Receipt != nil {
		e.DurationSeconds = j.Receipt.Usage.Wall.Seconds()
	}
	if j.ResultDir != "" {
		e.Results = results
	}
	s.emit(e)
}

// fail says submit failed, with the exit code it fails with.
func (s *eventSink) fail(job string, err error) {
	s.emit(Event{Event: "error", Job: job, Message: err.Error(), Code: exitCode(err)})
}

// copyFrom writes what path holds beyond offset to w and returns the new
// offset.
func copyFrom(path string, offset int64, w io.Writer) int64 {
	f, err := os.Open(path)
	if err != nil {
		return offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset
	}
	n, _ := io.Copy(w, f)
	return offset + n
}

// fundingKey is what of a job's funding makes a new progress line: a new
// confirmation, or the contract starting.
func fundingKey(f *contract.Funding) string {
	if f == nil {
		return ""
	}
	return fmt.Sprint(f.Confirmations, f.Needed, f.Ready)
}
