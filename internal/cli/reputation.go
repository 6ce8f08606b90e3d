package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// ReputationConfig reads the "reputation" config section over the defaults.
func (a *App) ReputationConfig() (reputation.Config, error) {
	cfg := reputation.DefaultConfig()
	if err := a.Section("reputation", &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// openReputation opens the node database's reputation records directly.
// The daemon holds the database while it runs; then these commands must go
// through its local API instead (to come: GET /v1/reputation[/PEER],
// GET/PUT/DELETE /v1/trust/PEER served from the daemon's live Book).
func (a *App) openReputation() (*store.DB, *reputation.Book, error) {
	cfg, err := a.ReputationConfig()
	if err != nil {
		return nil, nil, err
	}
	db, err := store.Open(filepath.Join(a.DataDir(), node.DBFile), 500*time.Millisecond)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("%w: the daemon is running; stop it to use this command until the local API serves reputation", err)
	}
	if err != nil {
		return nil, nil, err
	}
	// No contract evidence is needed here: stored attestations were
	// verified when they were accepted, and nothing new is added.
	b, err := reputation.NewBook(reputation.Options{Config: cfg, Store: store.NewReputationStore(db), Log: a.Logger()})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, b, nil
}

// reputationView is the reputation book as the commands use it: the
// daemon's through its API when it runs, else the database's directly.
type reputationView interface {
	Scores(ctx context.Context) ([]reputation.Score, error)
	Score(ctx context.Context, p peer.ID) (reputation.Score, error)
	Forget(ctx context.Context, p peer.ID) (reputation.Score, error)
	Trust(ctx context.Context) ([]api.TrustEdge, error)
	SetTrust(ctx context.Context, p peer.ID, weight float64) error
}

var _ reputationView = (*api.Client)(nil)

// reputation returns the view to use and a function to release it.
func (a *App) reputation(ctx context.Context) (reputationView, func(), error) {
	c := a.client()
	if _, err := c.Status(ctx); err == nil {
		return c, func() {}, nil
	} else if !errors.Is(err, api.ErrNoDaemon) {
		return nil, nil, err
	}
	db, b, err := a.openReputation()
	if err != nil {
		return nil, nil, err
	}
	return api.BookView{Book: b}, func() { db.Close() }, nil
}

func parsePeer(s string) (peer.ID, error) {
	id, err := peer.Decode(s)
	if err != nil {
		return "", fmt.Errorf("peer %q: %w", s, err)
	}
	return id, nil
}

func newTrustCmd(a *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "trust",
		Short: "Manage whose attestations this node trusts (trust propagates a bounded number of hops)",
	}
	var weight float64
	add := &cobra.Command{
		Use:   "add PEER",
		Short: "Trust PEER's attestations with weight W (0 < W ≤ 1)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if weight <= 0 || weight > 1 {
				return fmt.Errorf("--weight %v: must be in (0, 1]; use trust rm to remove", weight)
			}
			return a.setTrust(cmd.Context(), args[0], weight)
		},
	}
	add.Flags().Float64Var(&weight, "weight", 1, "trust weight in (0, 1]")
	rm := &cobra.Command{
		Use:   "rm PEER",
		Short: "Stop trusting PEER",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.setTrust(cmd.Context(), args[0], 0)
		},
	}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the peers this node trusts explicitly",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, done, err := a.reputation(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			list, err := v.Trust(cmd.Context())
			if err != nil {
				return err
			}
			type edge struct {
				Peer    string    `json:"peer"`
				Weight  float64   `json:"weight"`
				Updated time.Time `json:"updated"`
			}
			edges := []edge{}
			for _, e := range list {
				edges = append(edges, edge(e))
			}
			if asJSON {
				return printJSON(a.Stdout, edges)
			}
			sort.SliceStable(edges, func(i, j int) bool { return edges[i].Updated.After(edges[j].Updated) })
			tw := newTable(a.Stdout, "PEER", "WEIGHT", "SINCE")
			now := time.Now()
			for _, e := range edges {
				tw.row(e.Peer, fmt.Sprintf("%.2f", e.Weight), ago(now, e.Updated))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(add, rm, ls)
	return c
}

func (a *App) setTrust(ctx context.Context, s string, w float64) error {
	v, done, err := a.reputation(ctx)
	if err != nil {
		return err
	}
	defer done()
	id, err := resolvePeer(ctx, v, s)
	if err != nil {
		return err
	}
	return v.SetTrust(ctx, id, w)
}

// printJSON is writeJSON.
func printJSON(w io.Writer, v any) error { return writeJSON(w, v) }

// scoreView is a Score with printable peer IDs.
type scoreView struct {
	reputation.Score
	Peer    string       `json:"peer"`
	Sources []sourceView `json:"sources,omitempty"`
}

type sourceView struct {
	reputation.Source
	From string `json:"from"`
}

func viewScore(s reputation.Score) scoreView {
	v := scoreView{Score: s, Peer: s.Peer.String()}
	for _, src := range s.Sources {
		from := "self"
		if src.From != reputation.Self {
			from = src.From.String()
		}
		v.Sources = append(v.Sources, sourceView{Source: src, From: from})
	}
	v.Score.Sources = nil
	return v
}

func newReputationCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "reputation [PEER]",
		Short: "Show this node's view of its peers, or why PEER's score is what it is",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rv, done, err := a.reputation(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if len(args) == 1 {
				id, err := resolvePeer(cmd.Context(), rv, args[0])
				if err != nil {
					return err
				}
				sc, err := rv.Score(cmd.Context(), id)
				if err != nil {
					return err
				}
				v := viewScore(sc)
				if asJSON {
					return printJSON(a.Stdout, v)
				}
				printScore(a, v)
				return nil
			}
			scores, err := rv.Scores(cmd.Context())
			if err != nil {
				return err
			}
			views := []scoreView{}
			for _, sc := range scores {
				views = append(views, viewScore(sc))
			}
			sort.SliceStable(views, func(i, j int) bool { return views[i].Mean > views[j].Mean })
			if asJSON {
				return printJSON(a.Stdout, views)
			}
			tw := newTable(a.Stdout)
			fmt.Fprintln(tw, "PEER\tSCORE\t90%\tEVIDENCE\tTRUST\tSTATUS")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%.2f\t%.2f–%.2f\t%.1f\t%.2f\t%s\n", v.Peer, v.Mean, v.Low, v.High, v.Evidence, v.Trust, status(v.Score))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(newForgetCmd(a))
	return c
}

func newForgetCmd(a *App) *cobra.Command {
	return &cobra.Command{
		Use:   "forget PEER",
		Short: "Drop this node's own evidence about PEER, and any block it caused: PEER starts again as a newcomer",
		Long: `Drop what this node observed of PEER and the attestations about PEER it holds,
and with them any block: PEER starts again as a peer this node knows nothing
about. Contracts after this count again, and attestations issued after now.
Use it when a seller was blocked for failures that were not its own.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rv, done, err := a.reputation(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			id, err := resolvePeer(cmd.Context(), rv, args[0])
			if err != nil {
				return err
			}
			sc, err := rv.Forget(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "forgot what this node knew of %s; now %s (%s)\n", id, status(sc), sc.Why)
			return nil
		},
	}
}

func status(s reputation.Score) string {
	if s.Blocked {
		return "blocked"
	}
	return "ok"
}

func printScore(a *App, v scoreView) {
	w := a.Stdout
	fmt.Fprintf(w, "peer      %s\n", v.Peer)
	fmt.Fprintf(w, "score     %.3f (90%% interval %.3f–%.3f, Beta(%.2f, %.2f))\n", v.Mean, v.Low, v.High, v.Alpha, v.Beta)
	fmt.Fprintf(w, "evidence  %.2f contracts\n", v.Evidence)
	fmt.Fprintf(w, "trust     %.2f\n", v.Trust)
	fmt.Fprintf(w, "status    %s\n", status(v.Score))
	fmt.Fprintf(w, "why       %s\n", v.Why)
	for _, n := range v.Notes {
		fmt.Fprintf(w, "seen      %s %s (%s): %s\n", n.At.Local().Format("2006-01-02 15:04"), n.Outcome, n.ContractID, n.Reason)
	}
	if len(v.Sources) == 0 {
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "\nSOURCE\tWEIGHT\tGOOD\tBAD\tOUTCOMES")
	for _, s := range v.Sources {
		var outs []string
		for k, n := range s.Outcomes {
			outs = append(outs, fmt.Sprintf("%s %.1f", k, n))
		}
		sort.Strings(outs)
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%s\n", s.From, s.Weight, s.Good, s.Bad, strings.Join(outs, ", "))
	}
	tw.Flush()
}
