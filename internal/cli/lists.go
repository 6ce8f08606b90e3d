package cli

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/quantity"
)

// The human lists, newest first, through one table writer (table.go). Each
// takes now so that tests see the same "3 min ago" every time.

// printJobs is `blackbox jobs`.
func printJobs(w io.Writer, now time.Time, jobs []*contract.JobStatus) error {
	jobs = slices.Clone(jobs)
	slices.SortStableFunc(jobs, func(x, y *contract.JobStatus) int {
		return cmp.Or(y.Created.Compare(x.Created), cmp.Compare(x.ID, y.ID))
	})
	t := newTable(w, "JOB", "STATE", "SELLER", "PAID", "EXIT", "CREATED", "COMMAND", "WHY")
	for _, j := range jobs {
		t.row(j.ID, jobStateCell(j), dash(shortID(j.Seller.String())), sats(j.Paid), jobExitCell(j),
			ago(now, j.Created), strings.Join(j.Request.Command, " "), jobWhy(j))
	}
	return t.Flush()
}

// jobWhy is the job's error, and what its attempts and receipt add: the
// sellers it could not reach (nothing was funded with them) and the bytes
// moved (image, inputs, outputs) billed.
func jobWhy(j *contract.JobStatus) string {
	var notes []string
	if c := serviceCell(j.Service); c != "" {
		notes = append(notes, c)
	}
	if j.Error != "" {
		notes = append(notes, j.Error)
	}
	unreachable := 0
	for _, at := range j.Attempts {
		if at.Reason == contract.ReasonUnreachable {
			unreachable++
		}
	}
	if unreachable > 0 {
		notes = append(notes, fmt.Sprintf("%d seller(s) %s, nothing funded", unreachable, contract.ReasonUnreachable))
	}
	if r := j.Receipt; r != nil && r.EgressBytes > 0 {
		notes = append(notes, fmt.Sprintf("moved %s billed %s", quantity.FormatSize(int64(r.EgressBytes)), sats(r.Egress)))
	}
	return strings.Join(notes, "; ")
}

// jobStateCell is the state, with the phase while the job is under way.
func jobStateCell(j *contract.JobStatus) string {
	if j.Phase != "" && !jobDone(j.State) {
		if f := j.Funding; f != nil && j.Phase == contract.PhaseFund && !f.Ready {
			// The wait for confirmations, not only "searching (fund)".
			return fmt.Sprintf("%s (fund: %d/%d confirmations)", j.State, f.Confirmations, f.Needed)
		}
		return string(j.State) + " (" + j.Phase + ")"
	}
	return string(j.State)
}

// jobExitCell is the job's exit code when it ran to its end, and "-" when
// it never ran or did not finish: a job that failed before it started has
// no exit code, not 0.
func jobExitCell(j *contract.JobStatus) string {
	switch {
	case j.Receipt != nil:
		return strconv.FormatInt(j.Receipt.ExitCode, 10)
	case j.State == contract.JobDone:
		return strconv.FormatInt(j.ExitCode, 10)
	}
	return "-"
}

// printContracts is `blackbox contracts`: the seller's contracts, what they
// earned and what was refused.
func printContracts(w io.Writer, now time.Time, cs api.Contracts) error {
	list := slices.Clone(cs.Contracts)
	slices.SortStableFunc(list, func(x, y *contract.Record) int {
		return cmp.Or(y.Updated.Compare(x.Updated), cmp.Compare(x.ID, y.ID))
	})
	t := newTable(w, "CONTRACT", "BUYER", "STATE", "INTERVALS", "PAID", "UPDATED", "WHY")
	for _, r := range list {
		t.row(shortID(r.ID), dash(shortID(r.Peer.String())), r.State, r.Intervals, sats(r.Paid), ago(now, r.Updated), r.Why)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	var total int64
	for _, v := range cs.EarnedSats {
		total += v
	}
	line := "\nEarned:   " + sats(total)
	var parts []string
	for _, st := range slices.Sorted(maps.Keys(cs.EarnedSats)) {
		parts = append(parts, st+" "+sats(cs.EarnedSats[st]))
	}
	if len(parts) > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	fmt.Fprintln(w, line)
	if len(cs.Rejections) > 0 {
		parts = parts[:0]
		for _, r := range slices.Sorted(maps.Keys(cs.Rejections)) {
			parts = append(parts, fmt.Sprintf("%s %d", r, cs.Rejections[r]))
		}
		fmt.Fprintln(w, "Refused:  "+cleanCell(strings.Join(parts, ", ")))
	}
	return nil
}

// sortChannels puts the newest channels (opened at the highest block)
// first.
func sortChannels(list []*payment.Channel) {
	slices.SortStableFunc(list, func(x, y *payment.Channel) int {
		return cmp.Or(cmp.Compare(y.OpenHeight, x.OpenHeight), cmp.Compare(x.ID, y.ID))
	})
}

// printChannels is `blackbox channels`.
func printChannels(w io.Writer, views []channelView) error {
	t := newTable(w, "ID", "PEER", "ROLE", "CAPACITY", "PAID", "CLOSE FEE", "AFTER CLOSE", "EXPIRY", "STATE")
	for _, v := range views {
		after := "-" // a buyer's close is the seller's
		if v.Role == payment.RoleSeller.String() {
			after = sats(v.AfterClose)
		}
		t.row(v.ID, dash(shortID(v.Peer)), v.Role, sats(v.Capacity), sats(v.Paid), sats(v.CloseFee), after, "block "+strconv.FormatUint(uint64(v.Expiry), 10), v.State)
	}
	return t.Flush()
}

// printMarket is `blackbox market`: cheapest first (the order it is given).
// A job's price includes the start fee, shown on its own too.
func printMarket(w io.Writer, d time.Duration, offers []api.Offer) error {
	t := newTable(w, "SELLER", "CPU", "MEMORY", "DISK", "REGION", "JOB ("+d.String()+")", "START FEE", "PER HOUR", "PER CORE-HOUR", "RUNTIMES")
	for _, o := range offers {
		t.row(o.Seller, quantity.FormatCPU(int64(o.Resources.CPUMillis)), quantity.FormatSize(int64(o.Resources.MemoryBytes)),
			quantity.FormatSize(int64(o.Resources.DiskBytes)), dash(o.Region), sats(o.PricePerJob),
			fracSats(float64(o.Prices.StartFee)/1000), fracSats(o.PricePerHour), fracSats(float64(o.Prices.CoreHour)/1000), strings.Join(o.Runtimes, ","))
	}
	return t.Flush()
}

// fracSats formats a price that may be a fraction of a satoshi: "1,234 sat",
// "0.25 sat".
func fracSats(f float64) string {
	whole := int64(f)
	frac := strconv.FormatFloat(f-float64(whole), 'f', 2, 64)
	if frac == "0.00" {
		return sats(whole)
	}
	if frac == "1.00" {
		return sats(whole + 1)
	}
	return groupThousands(whole) + strings.TrimRight(strings.TrimPrefix(frac, "0"), "0") + " sat"
}
