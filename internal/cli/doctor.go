package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"
)

func newDoctorCmd(a *App) *cobra.Command {
	var asJSON, onlySandbox bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check everything this node needs to earn: sandbox (a real probe job), payments, clock, disk, reachability",
		Long: `Check everything this node needs to earn, each with its fix:

  sandbox       root, containerd, the runtime, cgroups, seccomp, user namespaces,
                then a real probe job through the sandbox exactly as the node runs
                one (its state dir, user namespace remap, runtime), and one under
                each other runtime (runc, crun, runsc): the node offers only those
                that run it
  payments      the chain source (btcd) is reachable, answers with the configured
                credentials and follows payment.network; it has caught up (chain
                sync); the wallet opens with the passphrase
  clock         against btcd's peers and the chain tip's time
  disk          free space in the data dir (what is offered after
                meter.reserve.disk) and under containerd's root
  reachability  the running node's AutoNAT verdict (peers dialled it back or
                could not): public; private, reachable through a relay slot,
                with whether hole punching can work (its NAT's kind); or
                unreachable; each with what to do (forward TCP and UDP 7460,
                enable UPnP on the router, set network.relays). With no daemon,
                only from the listen addresses

When a daemon runs for the data dir, the payment, clock, disk and
reachability checks are its own (it holds the wallet open), so doctor says
what ` + "`blackbox status`" + ` says; the sandbox probe runs here as well. Without a
daemon, doctor opens the chain source and the wallet itself with the
configured passphrase. Exits 1 when the node cannot earn.`,
		Example: `  blackbox doctor
  blackbox doctor --json | jq '.checks[] | select(.status != "ok")'
  blackbox doctor --sandbox     # only the sandbox checks and the probe job`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.NodeConfig()
			if err != nil {
				return err
			}
			sb := cfg.Sandbox
			checks := health.FromSandbox(sandbox.Diagnose(cmd.Context(), sb))
			if !onlySandbox {
				more, err := a.nodeHealth(cmd.Context(), cfg)
				if err != nil {
					return err
				}
				checks = append(checks, more...)
			}
			rep := health.NewReport(checks)
			if asJSON {
				if err := writeJSON(a.Stdout, rep); err != nil {
					return err
				}
			} else {
				printChecks(a, rep, onlySandbox)
			}
			if !rep.CanEarn {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON: can_earn, checks (name, status, detail, fix), reasons")
	cmd.Flags().BoolVar(&onlySandbox, "sandbox", false, "check only the sandbox (containerd, runtimes, the probe job)")
	return cmd
}

func printChecks(a *App, rep health.Report, onlySandbox bool) {
	for _, c := range rep.Checks {
		fmt.Fprintf(a.Stdout, "%-4s  %-12s  %s\n", strings.ToUpper(string(c.Status)), c.Name, c.Detail)
		if c.Fix != "" && c.Status != health.OK {
			fmt.Fprintf(a.Stdout, "      %-12s  fix: %s\n", "", c.Fix)
		}
	}
	switch {
	case onlySandbox && rep.CanEarn:
		fmt.Fprintln(a.Stdout, "This machine can run jobs; `blackbox doctor` checks the rest of what selling needs.")
	case onlySandbox:
		fmt.Fprintln(a.Stdout, "This machine cannot run jobs until the failures above are fixed.")
	case rep.CanEarn:
		fmt.Fprintln(a.Stdout, "This node can earn.")
	default:
		fmt.Fprintln(a.Stdout, "This node cannot earn until the failures above are fixed.")
	}
}

// nodeHealth is everything but the sandbox probe: the running daemon's own
// checks when one answers (so doctor and status agree), else this
// process's, opening the chain source and the wallet itself.
func (a *App) nodeHealth(ctx context.Context, cfg node.Config) ([]health.Check, error) {
	rep, err := a.client().Health(ctx)
	if err == nil {
		// The probe ran here too; the daemon's "sandbox" says how it
		// started. Both stay: a fail in either is a reason.
		return rep.Checks, nil
	}
	if !errors.Is(err, api.ErrNoDaemon) {
		return nil, fmt.Errorf("ask the running daemon: %w", err)
	}
	// A daemon this user may not talk to (the service's, as root) holds
	// the wallet: opening it here would say something else than status.
	if sock := api.SocketPath(cfg.DataDir); errors.Is(statErr(sock), os.ErrPermission) || syscall.Access(sock, 2 /* W_OK */) == syscall.EACCES {
		return nil, fmt.Errorf("%s belongs to a daemon this user may not use: run doctor as its user (sudo), or join its socket_group", sock)
	}
	return a.localHealth(ctx, cfg), nil
}

func statErr(path string) error {
	_, err := os.Stat(path)
	return err
}

// localHealth checks payments, clock, disk and reachability from this
// process, as the daemon would at start.
func (a *App) localHealth(ctx context.Context, cfg node.Config) []health.Check {
	pc := cfg.Payment
	quiet := slog.New(slog.DiscardHandler)
	var src health.ChainSource
	if pc.Backend == payment.BackendBtcd && pc.RPCUser != "" && pc.RPCPass != "" {
		if chain, err := payment.DialBtcd(pc, quiet); err == nil {
			defer chain.Close()
			src = chain
		}
	}
	chain := health.Chain(ctx, pc, src, time.Now())
	var open health.Opener
	// The light client syncs inside the node: doctor does not open the
	// wallet on it.
	if chain[0].Status != health.Fail && pc.Backend != payment.BackendNeutrino {
		pass := node.PassphraseOf(pc)
		open = func(ctx context.Context) error {
			w, err := payment.OpenWallet(ctx, filepath.Join(cfg.DataDir, node.WalletDir), pass.Value, pc, quiet)
			if err == nil {
				w.Close()
			}
			return err
		}
	}
	wallet := health.Wallet(ctx, pc, filepath.Join(cfg.DataDir, node.WalletDir), node.PassphraseOf(pc), open)
	checks := health.WithWallet(chain, wallet)
	pol, err := cfg.Meter.Policy()
	if err == nil {
		checks = append(checks, health.Disk(cfg.DataDir, pol, cfg.Sandbox))
	}
	var listen []ma.Multiaddr
	for _, s := range cfg.Listen {
		if m, err := ma.NewMultiaddr(s); err == nil {
			listen = append(listen, m)
		}
	}
	return append(checks, health.Reachability(listen))
}

// canEarn is status's "Can earn" line: the daemon's own health report.
func (a *App) canEarn(ctx context.Context) string {
	rep, err := a.client().Health(ctx)
	if err != nil {
		return "unknown: " + err.Error()
	}
	s := rep.Summary()
	if !rep.CanEarn {
		s += " (blackbox doctor says how to fix it)"
	}
	return s
}
