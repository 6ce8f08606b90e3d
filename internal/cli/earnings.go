package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/spf13/cobra"
)

func newEarningsCmd(a *App) *cobra.Command {
	var (
		asJSON bool
		since  string
	)
	c := &cobra.Command{
		Use:   "earnings",
		Short: "Show what this node earned, how busy it was and why it had no work",
		Long: `Show the seller's history: what it earned in the last 24 hours, 7 days and
30 days (settled on chain, in open channels, pending in running contracts),
the fees it paid and what is left net of them, how busy the machine was,
contracts by outcome, jobs and refused proposals; what closing the open
channels would cost now and leave; the market's median price for the same
resources; and why there was no work, each reason with its fix.

The node keeps this history in its database in 5-minute buckets for 90 days.
With --since, the buckets of that period are listed too (merged into wider
ones for long periods). While the daemon is stopped, the history is read
from the database (without the market's price).`,
		Example: `  blackbox earnings
  blackbox earnings --since 7d
  blackbox earnings --since 36h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := api.ParseSince(since)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if d > store.HistoryKeep {
				return fmt.Errorf("--since %s: the node keeps %d days of history: ask for 90d or less", since, int(store.HistoryKeep.Hours()/24))
			}
			e, err := a.client().Earnings(cmd.Context(), d)
			if errors.Is(err, api.ErrNoDaemon) {
				e, err = a.storedEarnings(d)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, e)
			}
			return writeEarnings(a.Stdout, e, since != "")
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&since, "since", "", "also list the history of this period: 24h, 7d, 30d, up to 90d")
	return c
}

// storedEarnings reads the history from the database while no daemon runs.
func (a *App) storedEarnings(since time.Duration) (api.Earnings, error) {
	path := filepath.Join(a.DataDir(), node.DBFile)
	if _, err := os.Stat(path); err != nil {
		return api.Earnings{}, fmt.Errorf("no node in %s (no %s): start one with `blackbox serve`", a.DataDir(), node.DBFile)
	}
	db, err := store.Open(path, 500*time.Millisecond)
	if errors.Is(err, store.ErrLocked) {
		return api.Earnings{}, fmt.Errorf("%w: the daemon is starting or stopping; try again in a moment", err)
	}
	if err != nil {
		return api.Earnings{}, err
	}
	defer db.Close()
	return node.StoredEarnings(db, since)
}

func earnSat(v int64) string { return fmt.Sprintf("%d sat", v) }

func earnPercent(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

// counts renders a name→count map as "a 2, b 1", largest first.
func earnCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(x, y string) int { return int(m[y] - m[x]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func earnTotal(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func writeEarnings(out io.Writer, e api.Earnings, listBuckets bool) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "WINDOW\tEARNED\tFEES\tNET\tSETTLED\tIN CHANNELS\tPENDING\tBUSY\tCONTRACTS\tJOBS")
	for _, r := range []struct {
		name string
		t    api.EarningsTotals
	}{{"24 h", e.Today}, {"7 days", e.Week}, {"30 days", e.Month}} {
		t := r.t
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", r.name, earnSat(t.EarnedSat),
			earnSat(t.FeesSat), earnSat(t.NetSat), earnSat(t.SettledSat), earnSat(t.ChannelSat), earnSat(t.PendingSat), earnPercent(t.Busy), earnTotal(t.Contracts), t.Jobs)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Contracts (30 days): %s\n", earnCounts(e.Month.Contracts))
	fmt.Fprintf(out, "Refused (30 days):   %s\n", earnCounts(e.Month.Refusals))
	fmt.Fprintln(out, closeLine(e))
	if l := marketLine(e); l != "" {
		fmt.Fprintln(out, l)
	}
	if err := writeEscrowEarnings(out, e.Escrow); err != nil {
		return err
	}
	if len(e.NoWork) > 0 {
		fmt.Fprintln(out)
		fmt.Fprintln(out, "Why no work:")
		writeNoWork(out, e.NoWork)
	}
	if !listBuckets {
		return nil
	}
	fmt.Fprintln(out)
	step := time.Duration(e.BucketSeconds) * time.Second
	fmt.Fprintf(out, "Since %s, by %s: earned %s, fees %s, net %s, busy %s\n", e.Since.Local().Format("2006-01-02 15:04"),
		earnStep(step), earnSat(e.Period.EarnedSat), earnSat(e.Period.FeesSat),
		earnSat(e.Period.NetSat), earnPercent(e.Period.Busy))
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "START\tEARNED\tFEES\tJOBS\tBUSY\tCONTRACTS\tREFUSED")
	for _, b := range e.Buckets {
		busy := "-"
		if off := b.SoldMilliCPU + b.SpareMilliCPU; off > 0 {
			busy = earnPercent(float64(b.SoldMilliCPU) / float64(off))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.Start.Local().Format("01-02 15:04"), earnSat(b.EarnedSat), earnSat(b.FeesSat),
			b.Jobs, busy, earnCounts(b.Contracts), earnCounts(b.Refusals))
	}
	return w.Flush()
}

// closeLine says what is in open channels, what closing them would cost now
// and what would be left.
func closeLine(e api.Earnings) string {
	h := e.Holdings
	if h == (payment.Holdings{}) { // an older daemon
		h.InChannels, h.CloseFee, h.AfterClose = e.InChannelsSat, e.CloseFeeSat, e.AfterCloseSat
	}
	lines := holdingsLines(h, earnSat)
	lines[0] = "In open channels: " + strings.TrimPrefix(lines[0], "in channels: ")
	return strings.Join(lines, "\n  ")
}

// marketLine compares this node's price with the market's median.
func marketLine(e api.Earnings) string {
	if e.MarketMedianPerHour <= 0 {
		return ""
	}
	s := fmt.Sprintf("Market: median %.0f sat/h for the resources you offer; you ask %.0f sat/h", e.MarketMedianPerHour, e.OwnPerHour)
	if e.AtMedianSat > 0 {
		s += fmt.Sprintf("; your sold hours of the period would have earned %s at the median", earnSat(e.AtMedianSat))
	}
	return s
}

func writeNoWork(out io.Writer, reasons []api.NoWorkReason) {
	for _, r := range reasons {
		fmt.Fprintf(out, "  %s: %s\n", r.Code, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(out, "    fix: %s\n", r.Fix)
		}
	}
}

func earnStep(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d d", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	}
	return fmt.Sprintf("%d min", d/time.Minute)
}

// statusEarnings adds the earnings lines to `blackbox status`: earned net
// of fees over 24 h, 7 d and 30 d, how busy the machine was, what closing
// the open channels would cost, and why there was no work. An older daemon
// without the history is skipped.
func statusEarnings(ctx context.Context, a *App, w io.Writer) {
	e, err := a.client().Earnings(ctx, 0)
	if err != nil {
		return
	}
	fmt.Fprintf(w, "Earned (net of fees):\t24 h %s, 7 d %s, 30 d %s\n", earnSat(e.Today.NetSat), earnSat(e.Week.NetSat), earnSat(e.Month.NetSat))
	fmt.Fprintf(w, "Busy:\t24 h %s, 7 d %s, 30 d %s\n", earnPercent(e.Today.Busy), earnPercent(e.Week.Busy), earnPercent(e.Month.Busy))
	for i, l := range strings.Split(strings.TrimPrefix(closeLine(e), "In open channels: "), "\n  ") {
		fmt.Fprintf(w, "%s\t%s\n", map[bool]string{true: "Channels:"}[i == 0], l)
	}
	for i, r := range e.NoWork {
		label := ""
		if i == 0 {
			label = "Why no work:"
		}
		fmt.Fprintf(w, "%s\t%s: %s (fix: %s)\n", label, r.Code, r.Detail, r.Fix)
	}
}
