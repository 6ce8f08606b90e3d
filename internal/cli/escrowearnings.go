package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/blackbox-market/blackbox/internal/api"
)

// writeEscrowEarnings prints what escrowed jobs paid and cost over the
// period, and each settled escrow (the last 10).
func writeEscrowEarnings(out io.Writer, e api.EscrowEarnings) error {
	if len(e.Payouts) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Escrows (period): earned %s, spent %s, refunded %s, payout fees %s; as a buyer, arbiter fees %s and funding fees about %s\n",
		earnSat(e.EarnedSat), earnSat(e.SpentSat), earnSat(e.RefundedSat), earnSat(e.FeesSat), earnSat(e.ArbiterFeesSat), earnSat(e.FundingFeesSat))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SETTLED\tESCROW\tROLE\tKIND\tAMOUNT\tTO SELLER\tTO BUYER\tFEE\tEARNED\tSPENT")
	list := e.Payouts
	if len(list) > 10 {
		list = list[len(list)-10:]
	}
	for _, p := range list {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.At.Local().Format("01-02 15:04"), short(p.Escrow), p.Role, p.Kind,
			earnSat(p.Amount), earnSat(p.ToSeller), earnSat(p.ToBuyer), earnSat(p.SpendFee), earnSat(p.Earned), earnSat(p.Spent))
	}
	return w.Flush()
}
