package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
			store.RaiseProcs()
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
	f.String("dashboard-addr", "", `serve the web dashboard on this host:port, "" for none (config key dashboard_addr, default 127.0.0.1:7461)`)
	a.bindFlag(c, "dashboard_addr", "dashboard-addr")
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
				// The node's state, with what `Can earn` and the earnings
				// lines show: a script reads the same as a person.
				out := struct {
					api.Status
					Health   *health.Report `json:"health,omitempty"`
					Earnings *api.Earnings  `json:"earnings,omitempty"`
				}{Status: s}
				if rep, err := a.client().Health(cmd.Context()); err == nil {
					out.Health = &rep
				}
				if e, err := a.client().Earnings(cmd.Context(), 0); err == nil {
					e.Buckets = nil
					out.Earnings = &e
				}
				return writeJSON(a.Stdout, out)
			}
			w := newTable(a.Stdout)
			fmt.Fprintf(w, "Peer ID:\t%s\n", s.PeerID)
			fmt.Fprintf(w, "Version:\t%s\n", s.Version)
			fmt.Fprintf(w, "Uptime:\t%s\n", (time.Duration(s.UptimeSeconds) * time.Second).String())
			fmt.Fprintf(w, "Data dir:\t%s\n", s.DataDir)
			fmt.Fprintf(w, "Peers:\t%d connected\n", len(s.Peers))
			fmt.Fprintf(w, "Reachability:\t%s\n", reachString(s.Reachability))
			fmt.Fprintf(w, "Network:\t%s\n", networkString(s.Reachability))
			fmt.Fprintf(w, "Can earn:\t%s\n", a.canEarn(cmd.Context()))
			fmt.Fprintf(w, "On offer:\t%s\n", capacityString(s.OnOffer))
			fmt.Fprintf(w, "Why:\t%s\n", s.Reason)
			fmt.Fprintf(w, "Buying:\t%s\n", yesOr(s.Buying, s.NotBuying))
			fmt.Fprintf(w, "Bitcoin:\t%s\n", bitcoinString(s.Bitcoin))
			if s.ChainSource != nil {
				fmt.Fprintf(w, "Chain source:\t%s\n", chainString(*s.ChainSource))
			}
			if line := unreachableString(s.UnreachableSellers); line != "" {
				fmt.Fprintf(w, "Unreachable sellers:\t%s\n", line)
			}
			fmt.Fprintf(w, "Machine free:\t%s (of %s)\n", capacityString(s.Measured.Free), capacityString(s.Measured.Total))
			fmt.Fprintf(w, "Held by contracts:\t%s\n", capacityString(s.Held))
			if z := s.ZeroConf; z != nil {
				fmt.Fprintf(w, "Unconfirmed fundings:\t%s\n", zeroConfString(*z))
			}
			if s.OfferSeq != 0 {
				fmt.Fprintf(w, "Offer:\tseq %d, valid until %s\n", s.OfferSeq, s.OfferExpiry.Local().Format(time.TimeOnly))
			}
			statusEarnings(cmd.Context(), a, w)
			if s.Payout != nil {
				fmt.Fprintf(w, "Payouts:\t%s\n", payoutLine(*s.Payout))
			}
			if s.DashboardURL != "" {
				fmt.Fprintf(w, "Dashboard:\t%s\n", s.DashboardURL)
			}
			if s.MetricsAddr != "" {
				fmt.Fprintf(w, "Metrics:\thttp://%s/metrics (health: /healthz)\n", s.MetricsAddr)
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

// reachString is status's reachability line: the state and how peers
// reach the node.
func reachString(r api.Reachability) string {
	how := map[string]string{
		"unknown":     "unknown: no verdict from AutoNAT yet",
		"public":      "public: peers dial it directly",
		"private":     "private (behind NAT): reachable through relay " + strings.Join(r.Relays, ", "),
		"unreachable": "unreachable: behind NAT with no relay slot",
	}[r.State]
	if how == "" {
		how = r.State
	}
	if len(r.PublicAddrs) > 0 {
		if r.PublicAddrsFrom == "observed" {
			how += "; peers see it at " + strings.Join(r.PublicAddrs, ", ") + " (observed, not confirmed reachable)"
		} else {
			how += " at " + strings.Join(r.PublicAddrs, ", ")
		}
	}
	if r.Source == "config" {
		how += " (forced by network.reachability)"
	}
	if r.State == "private" || r.State == "unreachable" {
		how += fmt.Sprintf("; NAT tcp %s, udp %s; hole punching %s", r.NAT.TCP, r.NAT.UDP, r.HolePunching)
	}
	if r.State == "unreachable" {
		how += " (blackbox doctor says what to do)"
	}
	return how
}

// networkString is status's network line: DHT mode, relay service, port
// mapping, hole punches.
func networkString(r api.Reachability) string {
	relay := "off"
	if r.RelayService {
		relay = "on"
	}
	pm := map[string]string{
		"off":       "off",
		"searching": "looking for a UPnP / NAT-PMP router",
		"no_router": "on, no UPnP / NAT-PMP router answered",
		"refused":   "on, the router mapped no port",
	}[r.PortMapping]
	if r.PortMapping == "mapped" {
		pm = "mapped " + strings.Join(r.MappedAddrs, ", ")
		if by := map[string]string{"upnp": "UPnP", "natpmp": "NAT-PMP"}[r.PortMappingProtocol]; by != "" {
			pm += " (" + by + ")"
		}
	} else if pm == "" {
		pm = r.PortMapping
	}
	return fmt.Sprintf("DHT %s, relay service %s, port mapping %s, hole punches %d (%d succeeded)",
		r.DHTMode, relay, pm, r.HolePunch.Attempts, r.HolePunch.Successes)
}

// unreachableString is status's line on the sellers the node, buying,
// could not reach ("" when none).
func unreachableString(u []api.UnreachableSeller) string {
	if len(u) == 0 {
		return ""
	}
	return fmt.Sprintf("%d ranked last, the first until %s (status --json lists them)", len(u), u[0].Until.Local().Format(time.TimeOnly))
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
			w := newTable(a.Stdout)
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
		mf      marketFlags
		timeout time.Duration
		asJSON  bool
	)
	c := &cobra.Command{
		Use:   "market",
		Short: "List offers on the network, cheapest first",
		Long: `List the offers the running node can find, verified and filtered, sorted by
what a job of the given resources and --time would cost there (start fee
included), as 'blackbox submit' would pay. The flags mean what submit's flags
of the same name mean: --cpus, --memory and --disk are the job's resources,
--time its length, --max-price the most the whole job may cost, in sats.
--max-price-per-hour caps the hourly price of the resources instead (one core
when no resources are given).

Without a running daemon for the data dir, market joins the network for a
moment under a throwaway identity, through the configured bootstrap peers and
mDNS, and leaves again.

` + quantity.SizeHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := mf.filter()
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
			offers = mf.byJobPrice(offers, f)
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
			return printMarket(a.Stdout, mf.duration, offers)
		},
	}
	fl := c.Flags()
	fl.StringVar(&mf.cpus, "cpus", "", "at least this many cores (e.g. 2, 0.5, 500m)")
	fl.StringVar(&mf.memory, "memory", "", "at least this much memory, e.g. 512Mi (2^20 bytes) or 512M (10^6 bytes)")
	fl.StringVar(&mf.disk, "disk", "", "at least this much disk, a size like --memory")
	fl.StringVar(&mf.region, "region", "", "only sellers in this region")
	fl.DurationVar(&mf.duration, "time", 2*time.Minute, "the job's length, as submit --time: prices a whole job and skips sellers whose contracts cannot last it")
	fl.Uint64Var(&mf.maxPrice, "max-price", 0, "the most a whole job may cost, in sats, start fee included (as submit --max-price)")
	fl.Float64Var(&mf.maxHourly, "max-price-per-hour", 0, "at most this many sats per hour for the requested resources")
	fl.DurationVar(&timeout, "timeout", 20*time.Second, "how long to search")
	fl.BoolVar(&asJSON, "json", false, "print a JSON array of offers")
	fl.SetNormalizeFunc(aliases(map[string]string{"cpu": "cpus"}))
	return c
}

// aliases lets old flag spellings keep working without showing them in
// --help: pflag parses --OLD as --NEW.
func aliases(old map[string]string) func(*pflag.FlagSet, string) pflag.NormalizedName {
	return func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if n, ok := old[name]; ok {
			name = n
		}
		return pflag.NormalizedName(name)
	}
}

// marketFlags are `blackbox market`'s filter flags.
type marketFlags struct {
	cpus, memory, disk, region string
	duration                   time.Duration
	maxPrice                   uint64
	maxHourly                  float64
}

// filter turns market flags into the daemon's filter, with errors naming
// the flag; the per-job cap is applied by byJobPrice.
func (mf marketFlags) filter() (offer.Filter, error) {
	var f offer.Filter
	if mf.cpus != "" {
		m, err := quantity.ParseCPU(mf.cpus)
		if err != nil || m <= 0 {
			return f, fmt.Errorf("--cpus %q: want a positive number of cores like 2 or 500m", mf.cpus)
		}
		f.Min.CPUMillis = uint64(m)
	}
	for _, s := range []struct {
		flag, val string
		dst       *uint64
	}{{"--memory", mf.memory, &f.Min.MemoryBytes}, {"--disk", mf.disk, &f.Min.DiskBytes}} {
		if s.val == "" {
			continue
		}
		n, err := quantity.ParseSize(s.val)
		if err != nil || n <= 0 {
			return f, fmt.Errorf("%s %q: want a positive size like 512Mi or 4Gi", s.flag, s.val)
		}
		*s.dst = uint64(n)
	}
	if mf.maxHourly < 0 || math.IsNaN(mf.maxHourly) {
		return f, fmt.Errorf("--max-price-per-hour %v: must not be negative", mf.maxHourly)
	}
	if mf.duration <= 0 {
		return f, fmt.Errorf("--time %s: must be positive", mf.duration)
	}
	if len(mf.region) > offer.MaxRegionLen {
		return f, fmt.Errorf("--region: at most %d characters", offer.MaxRegionLen)
	}
	f.Region, f.MaxPrice = mf.region, mf.maxHourly
	return f, nil
}

// byJobPrice prices a whole job of --time at each offer with the terms a
// contract would get (contract.TermsFor), drops offers whose contracts
// cannot last --time or whose job costs more than --max-price, and sorts
// the rest by that price, cheapest first.
func (mf marketFlags) byJobPrice(offers []api.Offer, f offer.Filter) []api.Offer {
	res := f.Min
	if res.CPUMillis == 0 && res.MemoryBytes == 0 && res.DiskBytes == 0 {
		res.CPUMillis = 1000 // what the hourly price is quoted for, too
	}
	req := &contract.Request{Resources: res, Duration: mf.duration}
	out := offers[:0]
	for _, o := range offers {
		minD, maxD := time.Duration(o.MinDuration*float64(time.Second)), time.Duration(o.MaxDuration*float64(time.Second))
		if minD > 0 && mf.duration < minD || maxD > 0 && mf.duration > maxD {
			continue
		}
		terms := contract.TermsFor(&offer.Offer{Prices: o.Prices,
			BillingInterval: time.Duration(o.BillingInterval * float64(time.Second))}, req)
		o.PricePerJob = terms.Total
		if mf.maxPrice > 0 && uint64(terms.Total) > mf.maxPrice {
			continue
		}
		out = append(out, o)
	}
	slices.SortStableFunc(out, func(a, b api.Offer) int { return cmp.Compare(a.PricePerJob, b.PricePerJob) })
	return out
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

// writeJSON is every command's --json output: indented, and without
// HTML escaping (a job's "a && b" stays readable).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
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
		quantity.FormatCPU(int64(r.CPUMillis)), quantity.FormatSize(int64(r.MemoryBytes)),
		quantity.FormatSize(int64(r.DiskBytes)), quantity.FormatBandwidth(int64(r.BandwidthBps)))
}

func pricesString(p offer.Prices) string {
	s := func(msat uint64) string { return fmt.Sprintf("%g", float64(msat)/1000) }
	return fmt.Sprintf("%s sat/core-h, %s sat/GiB-h memory, %s sat/GiB-h disk, %s sat/GiB egress, start fee %s sat",
		s(p.CoreHour), s(p.MemGiBHour), s(p.DiskGiBHour), s(p.EgressGiB), s(p.StartFee))
}

// zeroConfString says what the seller works for on fundings not yet
// confirmed, and its bound.
func zeroConfString(z payment.ZeroConfView) string {
	if z.MaxSat == 0 {
		return "none worked on (payment.zero_conf_max is 0: contracts wait for the confirmations)"
	}
	return fmt.Sprintf("exposure %d of %d sat (payment.zero_conf_max) on %d channel(s)", z.ExposureSat, z.MaxSat, len(z.Channels))
}
