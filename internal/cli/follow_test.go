package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// TestEventSink: submit --json's events are one JSON object per line, a
// job's output becomes one log event per line however it arrives, nothing
// is HTML-escaped, and done carries the exit code submit exits with.
func TestEventSink(t *testing.T) {
	var buf bytes.Buffer
	s := newEventSink(&buf)
	j := &contract.JobStatus{ID: "j1", State: contract.JobSearching, Phase: "discover"}
	s.emit(Event{Event: "submitted", Job: j.ID})
	s.progress(j, 0)
	j.State, j.Phase = contract.JobRunning, "run"
	j.Attempts = []contract.Attempt{{ContractID: "c1", Price: 7000, StartFee: 1000}}
	s.progress(j, 0)
	s.output(j, "stdout", []byte("a && b\npart"))
	s.output(j, "stdout", []byte("ial\nlast"))
	j.State, j.Phase, j.ExitCode, j.Paid = contract.JobDone, "", 3, 1200
	j.Attempts[0].Paid = 1200
	s.done(j, "res")
	var events []Event
	for line := range strings.Lines(buf.String()) {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		events = append(events, e)
	}
	var names, lines []string
	for _, e := range events {
		names = append(names, e.Event)
		if e.Event == "log" {
			lines = append(lines, e.Line)
		}
	}
	if strings.Join(names, " ") != "submitted searching running log log log done" || strings.Join(lines, "|") != "a && b|partial|last" {
		t.Fatalf("events %v, lines %q\n%s", names, lines, buf.String())
	}
	if strings.Contains(buf.String(), `\u0026`) {
		t.Errorf("HTML-escaped: %s", buf.String())
	}
	d := events[len(events)-1]
	if *d.ExitCode != 3 || *d.CostSat != 1200 || d.StartFeeSat != 1000 || d.Status.ID != "j1" || events[2].PriceSat != 7000 {
		t.Errorf("done %+v", d)
	}
}

// TestExitCodes: the job's own code, 125 for a job that did not run to
// its end, 2 for usage errors, 1 for the rest.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{jobExit(&contract.JobStatus{State: contract.JobDone}), 0},
		{jobExit(&contract.JobStatus{State: contract.JobDone, ExitCode: 7}), 7},
		{jobExit(&contract.JobStatus{State: contract.JobFailed}), ExitNotRun},
		{jobExit(&contract.JobStatus{State: contract.JobCancelled}), ExitNotRun},
		{usagef("--cpus %q: bad", "x"), ExitUsage},
		{errors.New(`unknown command "x" for "blackbox"`), ExitUsage},
		{errors.New("no blackbox daemon is running"), 1},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
	}
}
