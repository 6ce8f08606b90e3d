package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/spf13/cobra"
)

func newServeCmd(a *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the node: measure, advertise, sell (and buy through it)",
		Long: `Run the blackbox daemon in the foreground.

With no configuration at all it creates the data dir, an identity key and a
documented blackbox.yaml, measures what the machine can spare and advertises
a signed, priced offer. Other blackbox nodes on the LAN are found by mDNS;
nodes elsewhere are joined through --bootstrap addresses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.writeDefaultConfig(); err != nil {
				return err
			}
			// The file may have just been written: read it (it only holds defaults).
			if err := a.loadConfig(cmd); err != nil {
				return err
			}
			cfg, err := a.NodeConfig()
			if err != nil {
				return err
			}
			a.logLevel = cfg.LogLevel
			n, err := node.New(cfg, Version, a.Logger())
			if err != nil {
				return err
			}
			return n.Run(cmd.Context())
		},
	}
	f := c.Flags()
	f.StringSlice("listen", nil, "libp2p listen multiaddr (repeatable; config key listen)")
	f.StringSlice("bootstrap", nil, "bootstrap peer multiaddr with /p2p/ID (repeatable; config key bootstrap)")
	f.String("metrics-addr", "", "serve Prometheus metrics on this host:port (config key metrics_addr)")
	f.String("region", "", "region advertised in offers (config key region)")
	a.bindFlag(c, "listen", "listen")
	a.bindFlag(c, "bootstrap", "bootstrap")
	a.bindFlag(c, "metrics_addr", "metrics-addr")
	a.bindFlag(c, "region", "region")
	return c
}

// bindFlag makes a flag, when given, override config key.
func (a *App) bindFlag(c *cobra.Command, key, flag string) {
	if err := a.v.BindPFlag(key, c.Flags().Lookup(flag)); err != nil {
		panic(err) // a programming error: the flag does not exist
	}
}

func newStatusCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the running node: identity, addresses, peers, what is on offer and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, s)
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Peer ID:\t%s\n", s.PeerID)
			fmt.Fprintf(w, "Version:\t%s\n", s.Version)
			fmt.Fprintf(w, "Uptime:\t%s\n", (time.Duration(s.UptimeSeconds) * time.Second).String())
			fmt.Fprintf(w, "Data dir:\t%s\n", s.DataDir)
			fmt.Fprintf(w, "Peers:\t%d connected\n", len(s.Peers))
			fmt.Fprintf(w, "On offer:\t%s\n", capacityString(s.OnOffer))
			fmt.Fprintf(w, "Why:\t%s\n", s.Reason)
			fmt.Fprintf(w, "Buying:\t%s\n", yesOr(s.Buying, s.NotBuying))
			fmt.Fprintf(w, "Machine free:\t%s (of %s)\n", capacityString(s.Measured.Free), capacityString(s.Measured.Total))
			fmt.Fprintf(w, "Held by contracts:\t%s\n", capacityString(s.Held))
			if s.OfferSeq != 0 {
				fmt.Fprintf(w, "Offer:\tseq %d, valid until %s\n", s.OfferSeq, s.OfferExpiry.Local().Format(time.TimeOnly))
			}
			fmt.Fprintln(w, "Addresses:")
			for _, ad := range s.Addrs {
				fmt.Fprintf(w, "  %s\n", ad)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func yesOr(ok bool, why string) string {
	if ok {
		return "yes"
	}
	return "no: " + why
}

func capacityString(c meter.Capacity) string {
	if c.IsZero() {
		return "nothing"
	}
	return c.String()
}

func newOfferCmd(a *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "offer",
		Short: "Show this node's current signed offer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := a.client().Offer(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.Stdout, o)
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Seller:\t%s\n", o.Seller)
			fmt.Fprintf(w, "Resources:\t%s\n", resourcesString(o.Resources))
			fmt.Fprintf(w, "Prices:\t%s\n", pricesString(o.Prices))
			fmt.Fprintf(w, "Contracts:\t%s to %s, billed every %s\n", secs(o.MinDuration), secs(o.MaxDuration), secs(o.BillingInterval))
			fmt.Fprintf(w, "Runtimes:\t%s\n", strings.Join(o.Runtimes, ", "))
			if o.Region != "" {
				fmt.Fprintf(w, "Region:\t%s\n", o.Region)
			}
			fmt.Fprintf(w, "Sequence:\t%d\n", o.Seq)
			fmt.Fprintf(w, "Valid:\t%s to %s\n", o.Issued.Local().Format(time.DateTime), o.Expiry.Local().Format(time.DateTime))
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON, with the signed envelope")
	return c
}

func newMarketCmd(a *App) *cobra.Command {
	var (
		cpu, memory, disk, region string
		maxPrice                  float64
		timeout                   time.Duration
		asJSON                    bool
	)
	c := &cobra.Command{
		Use:   "market",
		Short: "List offers on the network, cheapest first",
		Long: `List the offers the running node can find, verified and filtered, sorted by
price. --max-price is in satoshis per hour for the requested resources (one
core when no resources are requested).

Without a running daemon for the data dir, market joins the network for a
moment under a throwaway identity, through the configured bootstrap peers and
mDNS, and leaves again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFilter(cpu, memory, disk, region, maxPrice)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			offers, err := a.client().Market(ctx, api.MarketRequest{Filter: f, TimeoutSeconds: timeout.Seconds()})
			if errors.Is(err, api.ErrNoDaemon) {
				// No daemon here: look for a moment through a throwaway node.
				offers, err = a.browse(ctx, f, timeout)
			}
			if err != nil {
				return err
			}
			if asJSON {
				if offers == nil {
					offers = []api.Offer{}
				}
				return writeJSON(a.Stdout, offers)
			}
			if len(offers) == 0 {
				fmt.Fprintln(a.Stdout, "no matching offers found")
				return nil
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SELLER\tCPU\tMEMORY\tDISK\tREGION\tSAT/HOUR\tSAT/CORE-H\tRUNTIMES")
			for _, o := range offers {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\n", o.Seller,
					meter.FormatCPU(int64(o.Resources.CPUMillis)), meter.FormatSize(int64(o.Resources.MemoryBytes)),
					meter.FormatSize(int64(o.Resources.DiskBytes)), dash(o.Region), o.PricePerHour,
					float64(o.Prices.CoreHour)/1000, strings.Join(o.Runtimes, ","))
			}
			return w.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&cpu, "cpu", "", "at least this many cores (e.g. 2, 0.5, 500m)")
	fl.StringVar(&memory, "memory", "", "at least this much memory (e.g. 512MiB, 4GiB)")
	fl.StringVar(&disk, "disk", "", "at least this much disk (e.g. 10GiB)")
	fl.StringVar(&region, "region", "", "only sellers in this region")
	fl.Float64Var(&maxPrice, "max-price", 0, "at most this many sats per hour for the requested resources")
	fl.DurationVar(&timeout, "timeout", 20*time.Second, "how long to search")
	fl.BoolVar(&asJSON, "json", false, "print a JSON array of offers")
	return c
}

// parseFilter turns market flags into a filter, with errors naming the flag.
func parseFilter(cpu, memory, disk, region string, maxPrice float64) (offer.Filter, error) {
	var f offer.Filter
	if cpu != "" {
		m, err := meter.ParseCPU(cpu)
		if err != nil || m <= 0 {
			return f, fmt.Errorf("--cpu %q: want a positive number of cores like 2 or 500m", cpu)
		}
		f.Min.CPUMillis = uint64(m)
	}
	for _, s := range []struct {
		flag, val string
		dst       *uint64
	}{{"--memory", memory, &f.Min.MemoryBytes}, {"--disk", disk, &f.Min.DiskBytes}} {
		if s.val == "" {
			continue
		}
		n, err := meter.ParseSize(s.val)
		if err != nil || n <= 0 {
			return f, fmt.Errorf("%s %q: want a positive size like 512MiB or 4GiB", s.flag, s.val)
		}
		*s.dst = uint64(n)
	}
	if maxPrice < 0 {
		return f, fmt.Errorf("--max-price %v: must not be negative", maxPrice)
	}
	if len(region) > offer.MaxRegionLen {
		return f, fmt.Errorf("--region: at most %d characters", offer.MaxRegionLen)
	}
	f.Region, f.MaxPrice = region, maxPrice
	return f, nil
}

func (a *App) client() *api.Client { return api.NewClient(a.dataDir) }

func (a *App) browse(ctx context.Context, f offer.Filter, timeout time.Duration) ([]api.Offer, error) {
	cfg, err := a.NodeConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	found, err := node.Browse(ctx, cfg, f, min(timeout/2, 5*time.Second), a.Logger())
	if err != nil {
		return nil, err
	}
	out := make([]api.Offer, 0, len(found))
	for _, o := range found {
		out = append(out, api.OfferView(o, f.Price(o), nil))
	}
	return out, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func secs(s float64) string { return (time.Duration(s) * time.Second).String() }

func resourcesString(r offer.Resources) string {
	return fmt.Sprintf("cpu %s, memory %s, disk %s, uplink %s",
		meter.FormatCPU(int64(r.CPUMillis)), meter.FormatSize(int64(r.MemoryBytes)),
		meter.FormatSize(int64(r.DiskBytes)), meter.FormatBandwidth(int64(r.BandwidthBps)))
}

func pricesString(p offer.Prices) string {
	s := func(msat uint64) string { return fmt.Sprintf("%g", float64(msat)/1000) }
	return fmt.Sprintf("%s sat/core-h, %s sat/GiB-h memory, %s sat/GiB-h disk, %s sat/GiB egress, start fee %s sat",
		s(p.CoreHour), s(p.MemGiBHour), s(p.DiskGiBHour), s(p.EgressGiB), s(p.StartFee))
}
