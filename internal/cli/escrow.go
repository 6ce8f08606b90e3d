package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Escrowed jobs: disputes (buyer or seller), the arbiter's decisions, and a
// held release.

func newDisputeCmd(a *App) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "dispute JOB --reason TEXT",
		Short: "Send an escrowed job's case to its arbiter (buyer or seller)",
		Long: `Send the arbiter of an escrowed job (submit --escrow) this node's case: the
signed contract, the seller's signed receipt if there is one, the digests of
the results this node holds, and the reason. JOB is the buyer's job ID or
either side's contract ID. The arbiter decides with 'blackbox arbitrate
decide'; its signature counts only after the escrow's CLTV delay, and then
this node completes the payout it decided by itself.`,
		Example: `  blackbox dispute 5f3a9c0e11d2b7aa --reason "the job never ran"
  blackbox dispute 9d2e...contract --reason "delivered, receipt signed, not released" --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.client().Dispute(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, e)
			}
			fmt.Fprintf(a.Stdout, "escrow %s disputed: the arbiter %s has the case\n", e.ID, e.Market.Arbiter)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = c.MarkFlagRequired("reason")
	return c
}

func newReleaseCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "release JOB",
		Short: "Release an escrowed job's payment to the seller (arbiter.release: manual)",
		Long: `Sign the release of an escrowed job's escrow and hand it to the seller, who
completes and broadcasts it. With arbiter.release: auto the node does this by
itself once the receipt and the result digests check out.`,
		Example: `  blackbox release 5f3a9c0e11d2b7aa`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.client().Release(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, e)
			}
			fmt.Fprintf(a.Stdout, "escrow %s %s: %s\n", e.ID, e.State, e.SpendTxid)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newArbitrateCmd(a *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "arbitrate",
		Short: "List, show and decide escrows (an arbiter's disputes)",
		Long: `An arbiter (arbiter.enabled) holds one key of every escrow it was chosen for.
'list' shows this node's escrows, 'show' one with the case sent with its
dispute, and 'decide' signs the payout to the seller, the buyer, or split
between them, and sends it to the party paid, who completes it once the
escrow's CLTV delay is reached.`,
		Example: `  blackbox arbitrate list
  blackbox arbitrate show 4be1
  blackbox arbitrate decide 4be1 --pay seller`,
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Short:   "List this node's escrows (as buyer, seller or arbiter)",
		Example: `  blackbox arbitrate list --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			es, err := a.client().Escrows(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, es)
			}
			t := newTable(a.Stdout, "ESCROW", "ROLE", "STATE", "AMOUNT", "DELAY", "CONTRACT", "DISPUTE", "DECISION")
			for _, e := range es {
				m := e.Market
				if m == nil {
					m = &payment.EscrowMarket{}
				}
				t.row(e.ID, e.Role, e.State, e.Amount, e.Delay, short(m.Contract), m.Reason, m.Decision)
			}
			return t.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use:     "show ESCROW",
		Short:   "Show one escrow and its dispute's case",
		Example: `  blackbox arbitrate show 4be1 --json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.client().Escrow(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, e)
			}
			return printEscrow(a.Stdout, e)
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var pay string
	decide := &cobra.Command{
		Use:   "decide ESCROW --pay seller|buyer|split:N",
		Short: "Decide a disputed escrow: sign the payout to the seller, the buyer, or split",
		Long: `Sign the arbitrated payout of a disputed escrow and send it to the party paid
(split:N: N sats to the seller, the rest less the fee to the buyer; sent to
both, either completes it). N must leave both outputs above dust after the
split's fee: at least the seller's dust limit, at most the escrow less the
fee and the buyer's dust limit; outside that the refusal names the range
and changes nothing. An escrow is decided once: a second decision is
refused.`,
		Example: `  blackbox arbitrate decide 4be1 --pay seller
  blackbox arbitrate decide 4be1 --pay buyer
  blackbox arbitrate decide 4be1 --pay split:30000`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.client().Decide(cmd.Context(), args[0], pay)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, e)
			}
			fmt.Fprintf(a.Stdout, "escrow %s decided: pay %s (valid from block %d)\n", e.ID, e.Market.Decision, e.Delay)
			return nil
		},
	}
	decide.Flags().StringVar(&pay, "pay", "", "seller, buyer, or split:N with N the seller's share in sats (required)")
	decide.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = decide.MarkFlagRequired("pay")
	c.AddCommand(list, show, decide)
	return c
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

func printEscrow(w io.Writer, e *payment.EscrowRecord) error {
	t := newTable(w)
	t.row("escrow", e.ID)
	t.row("role", e.Role)
	t.row("state", e.State)
	t.row("amount", fmt.Sprintf("%d sats", e.Amount))
	t.row("arbiter key counts from block", fmt.Sprintf("%d (%d blocks after block %d)", e.Delay, int64(e.Delay)-int64(e.OpenHeight), e.OpenHeight))
	if e.Release > 0 {
		t.row("release", fmt.Sprintf("%d sats to the seller (the receipt's bill, fee from it), %d back to the buyer", e.Release, e.Amount-e.Release))
	}
	if e.SpendTxid != "" {
		t.row("spent by", e.SpendTxid+" ("+e.SpendKind.String()+")")
	}
	if p := e.Paid; p != nil {
		t.row("paid", fmt.Sprintf("%d sats to the seller, %d to the buyer, fee %d", p.ToSeller, p.ToBuyer, p.Fee))
	}
	if m := e.Market; m != nil {
		t.row("contract", m.Contract)
		t.row("buyer", m.Buyer)
		t.row("seller", m.Seller)
		t.row("arbiter", m.Arbiter)
		if m.ArbiterFee > 0 {
			t.row("arbiter fee", fmt.Sprintf("%d sats (paid at funding)", m.ArbiterFee))
		}
		if m.DisputedBy != "" {
			t.row("disputed by", m.DisputedBy)
			t.row("reason", m.Reason)
		}
		if m.Decision != "" {
			t.row("decision", "pay "+m.Decision)
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if e.Market != nil && e.Market.Evidence != "" {
		fmt.Fprint(w, "\ncase:\n"+e.Market.Evidence)
	}
	return nil
}
