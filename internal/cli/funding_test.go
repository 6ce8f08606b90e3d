package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// TestFundingProgress: while a contract waits for its funding's
// confirmations, submit prints them with the next block's estimate (and
// its --json events carry them), jobs shows them in the state column, and
// a job that started unconfirmed says so.
func TestFundingProgress(t *testing.T) {
	j := &contract.JobStatus{ID: "j1", State: contract.JobSearching, Phase: contract.PhaseFund,
		Funding: &contract.Funding{Confirmations: 1, Needed: 3, NextBlockSeconds: 412}}
	var w bytes.Buffer
	humanSink{w: &w}.progress(j, 0)
	if !strings.Contains(w.String(), "searching (fund), funding: 1/3 confirmations, next block in about 7m0s, paid 0 sat") {
		t.Fatalf("progress line %q", w.String())
	}
	if got := jobStateCell(j); got != "searching (fund: 1/3 confirmations)" {
		t.Fatalf("jobs state cell %q", got)
	}
	var buf bytes.Buffer
	newEventSink(&buf).progress(j, 0)
	var e Event
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil || e.Event != "funding" || e.Funding == nil || e.Funding.Confirmations != 1 {
		t.Fatalf("event %s: %+v %v", buf.String(), e, err)
	}
	if fundingKey(j.Funding) == fundingKey(&contract.Funding{Confirmations: 2, Needed: 3}) {
		t.Fatal("a new confirmation makes no new progress line")
	}
	j.Funding = &contract.Funding{Needed: 3, Ready: true, ZeroConf: true, ExposureSat: 11, MaxSat: 10000}
	w.Reset()
	humanSink{w: &w}.progress(j, 0)
	if !strings.Contains(w.String(), "funding: 0/3 confirmations, started unconfirmed (seller's exposure 11 of 10000 sat)") {
		t.Fatalf("progress line %q", w.String())
	}
	if got := jobStateCell(j); got != "searching (fund)" {
		t.Fatalf("jobs state cell %q", got)
	}
}
