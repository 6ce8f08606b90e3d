package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// serviceFlags are `blackbox submit --service`'s own flags.
type serviceFlags struct {
	service  bool
	port     uint16
	health   string
	replicas int
	forward  string
}

func addServiceFlags(fl *pflag.FlagSet, f *serviceFlags) {
	fl.BoolVar(&f.service, "service", false, "run CMD as a service until blackbox cancel stops it: contracts renew before they end, the seller restarts it when it exits, --max-price is sats per hour")
	fl.Uint16Var(&f.port, "port", 0, "with --service: the TCP port the service listens on inside its sandbox (required)")
	fl.StringVar(&f.health, "health", "tcp", "with --service: the seller's health check, tcp (the port accepts) or http:/PATH (GET answers 2xx/3xx)")
	fl.IntVar(&f.replicas, "replicas", 1, "with --service: how many sellers run it at once; the forward balances over the healthy ones")
	fl.StringVar(&f.forward, "forward", "127.0.0.1:0", `with --service: the local address forwarded to it from the start (port 0: any free one; "" none, see blackbox forward)`)
}

// service turns the service flags into the request's Service (nil
// without --service).
func (f serviceFlags) toService(fl *pflag.FlagSet) (*contract.Service, error) {
	if !f.service {
		for _, n := range []string{"port", "health", "replicas", "forward"} {
			if fl.Changed(n) {
				return nil, usagef("--%s needs --service", n)
			}
		}
		return nil, nil
	}
	if f.port == 0 {
		return nil, usagef("--service needs --port: the port the service listens on inside its sandbox")
	}
	if f.replicas < 1 || f.replicas > contract.MaxReplicas {
		return nil, usagef("--replicas %d: want 1 to %d", f.replicas, contract.MaxReplicas)
	}
	h := f.health
	if h != "tcp" && !strings.HasPrefix(h, "http:/") {
		return nil, usagef("--health %q: want tcp or http:/PATH", h)
	}
	return &contract.Service{Port: f.port, Health: h, Replicas: f.replicas, Listen: f.forward}, nil
}

// submitService starts a service and prints its ID and the address
// forwarded to it.
func (a *App) submitService(ctx context.Context, req contract.Request, asJSON bool) error {
	c := a.client()
	id, err := c.Submit(ctx, req)
	if err != nil {
		return err
	}
	j, err := c.Job(ctx, id)
	if req.Service.Listen != "" {
		// The forward listens once the service starts.
		deadline := time.Now().Add(10 * time.Second)
		for err == nil && (j.Service == nil || len(j.Service.Forwards) == 0) && !jobDone(j.State) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			j, err = c.Job(ctx, id)
		}
	}
	if err != nil {
		return a.jobError(id, err)
	}
	if asJSON {
		return writeJSON(a.Stdout, j)
	}
	fmt.Fprintln(a.Stdout, id)
	fmt.Fprintf(a.Stderr, "service %s submitted: %d replica(s) of port %d, renewed until `blackbox cancel %s`\n", id, req.Service.Replicas, req.Service.Port, shortID(id))
	if j.Service != nil {
		for _, f := range j.Service.Forwards {
			fmt.Fprintf(a.Stderr, "forwarding %s -> the service's port %d (`blackbox jobs` shows its health)\n", f, req.Service.Port)
		}
	}
	if jobDone(j.State) {
		return fmt.Errorf("service %s %s: %s", id, j.State, j.Error)
	}
	return nil
}

func newForwardCmd(a *App) *cobra.Command {
	var listen string
	c := &cobra.Command{
		Use:   "forward SERVICE --listen HOST:PORT",
		Short: "Forward a local TCP address to a service's port, over libp2p to its sellers",
		Long: `The node listens on --listen and carries each connection over a new
libp2p stream (/blackbox/forward/1.0.0) to one of the service's healthy
replicas, in turn; the seller connects it to the port inside the service's
own sandbox, which has no other network path. Bytes forwarded are billed
as egress. The forward lasts as long as the service.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			addr, err := a.client().Forward(cmd.Context(), id, listen)
			if err != nil {
				return a.jobError(id, err)
			}
			fmt.Fprintln(a.Stdout, addr)
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "local address to listen on (port 0: any free one)")
	return c
}

// serviceCell is what `blackbox jobs` says of a service: its port, healthy
// replicas of wanted, and its forwards.
func serviceCell(s *contract.ServiceStatus) string {
	if s == nil {
		return ""
	}
	cell := fmt.Sprintf("service :%d %d/%d healthy (%s)", s.Port, s.Healthy(), s.Replicas, s.Health)
	if len(s.Forwards) > 0 {
		cell += ", forward " + strings.Join(s.Forwards, " ")
	}
	if s.Renewals+s.Replacements > 0 {
		cell += fmt.Sprintf(", %d renewed, %d replaced", s.Renewals, s.Replacements)
	}
	return cell
}

// printService is `blackbox job`'s part for a service: each replica.
func printService(w io.Writer, s *contract.ServiceStatus) {
	if s == nil {
		return
	}
	fmt.Fprintf(w, "Service:\t%s\n", serviceCell(s))
	for _, r := range s.Running {
		h := string(r.Health.State)
		if r.Health.Restarts > 0 {
			h += fmt.Sprintf(", %d restart(s)", r.Health.Restarts)
		}
		if r.Health.Detail != "" {
			h += ": " + r.Health.Detail
		}
		fmt.Fprintf(w, "  replica %d\t%s contract %s: %s %s, %s, paid %s\n", r.Slot, dash(shortID(r.Seller.String())), dash(shortID(r.ContractID)), r.State, r.Phase, cleanCell(h), sats(r.Paid))
	}
}
