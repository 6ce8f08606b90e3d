//go:build integration

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/btcsuite/btcd/btcutil"
)

// TestSubmitFailsFast: a buyer's mistakes are said by `blackbox submit`
// before any negotiation, with what would work (issue 13): an empty
// wallet names the balance needed and the address to fund; --max-price
// below every offer names the cheapest job and its seller; --cpus 64 names
// the largest offer. Nothing is agreed, funded or paid: no job, no
// contract on either side, no channel. Then a real job with
// `submit --json`, whose output parses line by line and ends in "done".
// How long each refusal took is logged (the report's numbers), never
// asserted.
func TestSubmitFailsFast(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	sellerID := seller.peerID()
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	image := busybox(t, work)

	// refused runs submit, which must fail with exit code 1 and a message
	// holding every want; it returns the message.
	refused := func(what string, flags []string, want ...string) string {
		t.Helper()
		args := append(append([]string{"--data-dir", buyer.dir, "submit", "--image", image}, flags...), "--", "true")
		start := time.Now()
		out, err := runCLI(t, m.bin, args...)
		took := time.Since(start)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%s: submit: %v, want exit 1\n%s", what, err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: %q does not say %q", what, out, w)
			}
		}
		t.Logf("%s: %q in %s", what, out, took.Round(time.Millisecond))
		return out
	}
	nothingMoved := func(when string) {
		t.Helper()
		ctx := context.Background()
		if jobs, err := buyer.api().Jobs(ctx); err != nil || len(jobs) != 0 {
			t.Fatalf("%s: the buyer has %d jobs (%v)", when, len(jobs), err)
		}
		if chans, err := buyer.api().Channels(ctx); err != nil || len(chans) != 0 {
			t.Fatalf("%s: the buyer has %d channels (%v)", when, len(chans), err)
		}
		if cs, err := seller.api().Contracts(ctx); err != nil || len(cs.Contracts) != 0 {
			t.Fatalf("%s: the seller has %d contracts (%v)", when, len(cs.Contracts), err)
		}
		if o, err := buyer.cli("reputation", sellerID, "--json"); err != nil || !strings.Contains(o, `"evidence": 0,`) {
			t.Fatalf("%s: the buyer holds evidence about the seller: %v\n%s", when, err, o)
		}
	}

	// An empty wallet: the balance needed (a channel of ten jobs, or
	// 100000 sat at least, plus the funding fee) and an address.
	msg := refused("empty wallet", []string{"--max-price", "100000"}, "the wallet has 0 sat spendable", "this job needs about", "(a channel of ", " + fee ", "send at least")
	addr := regexp.MustCompile(`send at least \d+ sat to (\S+) and wait`).FindStringSubmatch(msg)
	if addr == nil {
		t.Fatalf("no address to fund in %q", msg)
	}
	if _, err := btcutil.DecodeAddress(addr[1], btcdtest.Params); err != nil {
		t.Fatalf("the address to fund %q: %v", addr[1], err)
	}
	nothingMoved("after an empty wallet")
	m.fund(buyer.proc, 1_000_000)

	// --max-price below every offer: the cheapest job, as `market` prices
	// it for the same request.
	out, err := buyer.cli("market", "--json", "--cpus", "1", "--memory", "256MiB", "--disk", "256MiB", "--time", "2m")
	var offers []api.Offer
	if err != nil || json.Unmarshal([]byte(out), &offers) != nil || len(offers) != 1 {
		t.Fatalf("market: %v\n%s", err, out)
	}
	cheapest := offers[0].PricePerJob
	refused("max price too low", []string{"--max-price", "10"}, "no seller offers this job for 10 sat or less",
		"the cheapest is "+strconv.FormatInt(cheapest, 10)+" sat, start fee 1000 sat included", "seller "+sellerID, "raise --max-price to "+strconv.FormatInt(cheapest, 10))
	refused("64 CPUs", []string{"--cpus", "64", "--max-price", "100000"}, "no seller offers 64 CPUs", "the largest offer is "+quantity.FormatCPU(int64(offers[0].Resources.CPUMillis))+" CPUs", "seller "+sellerID)
	nothingMoved("after the refused submits")

	// A job that fits, as a script follows it.
	events, err := submitEvents(t, buyer, image, filepath.Join(work, "res"), append(jobFlags, "--max-price", strconv.FormatInt(cheapest, 10)), "sh", "-c", "echo one; echo two >&2; echo three")
	if err != nil {
		t.Fatalf("submit --json: %v: %+v", err, events)
	}
	var names []string
	logs := map[string][]string{}
	for _, e := range events {
		names = append(names, e.Event)
		if e.Event == "log" {
			logs[e.Stream] = append(logs[e.Stream], e.Line)
		}
	}
	last := events[len(events)-1]
	if last.Event != "done" || last.ExitCode == nil || *last.ExitCode != 0 || last.Status == nil || last.CostSat == nil ||
		*last.CostSat != last.Status.Paid || *last.CostSat <= 1000 || *last.CostSat > cheapest || last.StartFeeSat != 1000 {
		t.Fatalf("last event %+v, want done, exit 0, a cost over the 1000 sat start fee and at most %d", last, cheapest)
	}
	if strings.Join(logs["stdout"], ",") != "one,three" || strings.Join(logs["stderr"], ",") != "two" {
		t.Errorf("log events: %v", logs)
	}
	// (negotiating and funding may pass between two polls)
	for _, want := range []string{"submitted", "searching", "running"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q event in %v", want, names)
		}
	}
	t.Logf("events: %v", names)

	// job --logs --follow: the output as it comes, until the job ends,
	// and the job's exit code.
	id := submitDetached(t, buyer, image, append(jobFlags, "--max-price", strconv.FormatInt(cheapest, 10)), "sh", "-c", "echo first; sleep 3; echo second >&2; exit 3")
	c := exec.Command(m.bin, "--data-dir", buyer.dir, "job", id, "--logs", "--follow")
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || stdout.String() != "first\n" || stderr.String() != "second\n" {
		t.Fatalf("job --logs --follow: %v, stdout %q, stderr %q; want exit 3, first, second", err, stdout.String(), stderr.String())
	}
	// jobs --state
	for state, want := range map[string]int{"done": 2, "running": 0, "failed,cancelled": 0} {
		out, err := buyer.cli("jobs", "--state", state, "--json")
		var jobs []json.RawMessage
		if err != nil || json.Unmarshal([]byte(out), &jobs) != nil || len(jobs) != want {
			t.Errorf("jobs --state %s: %v, %d jobs, want %d\n%s", state, err, len(jobs), want, out)
		}
	}
}
