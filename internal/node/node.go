// Package node is the blackbox daemon: it builds the libp2p host, the DHT and
// every subsystem from a typed Config, starts them in order with a rollback
// stack so that a failure half way undoes what was started, and stops them in
// reverse. It holds no domain rules; those live in pkg/.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/dashboard"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MDNSService is the mDNS service name blackbox nodes announce on the LAN.
const MDNSService = "blackbox"

// DBFile is the database's name inside the data dir.
const DBFile = "blackbox.db"

// Node is a running blackbox daemon.
type Node struct {
	cfg     Config
	version string
	log     *slog.Logger

	key     crypto.PrivKey
	db      *store.DB
	host    host.Host
	dht     *dht.IpfsDHT
	meter   *meter.Meter
	pub     *offer.Publisher
	disc    *offer.Discoverer
	metrics *metrics
	started time.Time

	sandbox *sandbox.Sandbox // nil when containerd is unavailable
	// runtimes are the offered runtimes (offer.runtimes) that ran the
	// sandbox's probe job, at start or later (offeredRuntimes): what the
	// offer lists. reprobe are those whose probe at start ran out of time.
	runtimesMu sync.Mutex
	runtimes   []string
	reprobe    []string
	wallet     *liveWallet // nil when payments are off
	chain      payment.ChainSource
	// tips answers the pollers of the chain's tip from one recent
	// question (tips.go); nil when payments are off.
	tips     *sharedTip
	payments *payment.Manager // nil when payments are off
	// payCfg is the payment config in force (the payout address filled
	// in); escrow runs escrowed jobs (escrow.go), nil when payments are off.
	payCfg payment.Config
	escrow *escrowNode
	seller *contract.Seller // nil when the node cannot sell
	buyer  *contract.Buyer  // nil when the node cannot buy
	payer  *payment.Payer   // the buyer's channels (nil when the node cannot buy)
	// noSell and noBuy say why the node does not sell or buy.
	noSell []string
	noBuy  string
	book   *reputation.Book
	// BookView serves the API's reputation calls from book.
	api.BookView
	attester *attester
	exchange *reputation.Exchange
	history  *history
	health   nodeHealth
	// reach follows the node's reachability (AutoNAT, relays, NAT kind).
	reach *reachTracker

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	cleanup []func() error

	// cfgMu guards cfg.Meter, which SetPolicy changes while the node runs.
	cfgMu sync.Mutex
	// logs keeps the last log lines for the dashboard.
	logs *dashboard.LogRing
	// dashboardURL and metricsAddr are where the dashboard and the
	// metrics are served, for status.
	dashboardURL, metricsAddr string

	// restoring is set while `wallet restore` replaces the wallet
	// (walletrestore.go): the node neither sells nor buys meanwhile.
	restoring atomic.Bool
	restoreMu sync.Mutex
}

// New checks cfg and returns a node that is not started yet.
func New(cfg Config, version string, log *slog.Logger) (*Node, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data dir")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	logs := dashboard.NewLogRing(LogTail)
	log = slog.New(logs.Tee(log.Handler()))
	return &Node{cfg: cfg, version: version, log: log, logs: logs}, nil
}

// Start brings every subsystem up. If one fails, everything already started
// is stopped in reverse order and the error returned.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			n.unwind()
		}
	}()
	// runCtx is the contract engines' and mDNS's; it ends last, after
	// their own Close. The background loops (publisher, meter, chain tick,
	// peer count) get loopCtx, which Stop ends first.
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.push(func() error { cancel(); n.wg.Wait(); return nil })
	loopCtx, stopLoops := context.WithCancel(runCtx)
	defer func() {
		if err != nil {
			stopLoops()
		}
	}()
	n.started = time.Now()

	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if n.key, err = LoadOrCreateIdentity(n.cfg.DataDir); err != nil {
		return err
	}
	if n.db, err = store.Open(filepath.Join(n.cfg.DataDir, DBFile), 2*time.Second); err != nil {
		return err
	}
	n.push(n.db.Close)
	n.history = newHistory(n)

	// Payments before the reputation book: its evidence verifier asks the
	// payment chain whether a channel's funding is real.
	n.startSandbox(ctx)
	if err := n.startPayments(ctx); err != nil {
		return err
	}
	if err := n.requirePayments(); err != nil {
		return err
	}
	if err := n.startReputation(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	n.metrics = newMetrics(reg, n)

	if err := n.startHost(reg); err != nil {
		return err
	}
	if err := n.startReach(loopCtx); err != nil {
		return err
	}
	if err := n.startDHT(ctx); err != nil {
		return err
	}
	if n.cfg.MDNS {
		n.startMDNS(runCtx, loopCtx)
	}
	if err := n.startMarket(); err != nil {
		return err
	}
	if err := n.newEscrow(); err != nil {
		return err
	}
	if err := n.startContracts(runCtx); err != nil {
		return err
	}
	n.startEscrow(loopCtx)
	n.runMarket(loopCtx)
	// Stop ends the loops before the engines, the host, the wallet, the
	// chain and the database they use go away (lnd's server.Stop order).
	n.push(func() error { stopLoops(); n.wg.Wait(); return nil })
	srv, err := api.Listen(n.cfg.DataDir, n, n.log, api.WithGroup(n.cfg.SocketGroup))
	if err != nil {
		return err
	}
	n.push(srv.Close)
	if err := n.startDashboard(); err != nil {
		return err
	}
	if n.cfg.MetricsAddr != "" {
		if err := n.serveMetrics(reg); err != nil {
			return err
		}
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.trackPeers(loopCtx) }()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.history.run(loopCtx) }()
	n.log.Info("blackbox node started", "peer_id", n.host.ID(), "addrs", n.host.Addrs(), "data_dir", n.cfg.DataDir)
	return nil
}

func (n *Node) push(f func() error) { n.cleanup = append(n.cleanup, f) }

// unwind runs the cleanup stack in reverse; it never stops half way.
func (n *Node) unwind() error {
	var errs []error
	for i := len(n.cleanup) - 1; i >= 0; i-- {
		if err := n.cleanup[i](); err != nil {
			errs = append(errs, err)
		}
	}
	n.cleanup = nil
	return errors.Join(errs...)
}

// Stop stops every subsystem in reverse order of start.
func (n *Node) Stop() error {
	err := n.unwind()
	n.log.Info("blackbox node stopped")
	return err
}

// Run starts the node, waits for ctx to end, and stops it.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return n.Stop()
}

// Host is the node's libp2p host (for tests and the subsystems to come).
func (n *Node) Host() host.Host { return n.host }

func (n *Node) startHost(reg prometheus.Registerer) error {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	limits.AddServiceLimit(offer.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20})
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return fmt.Errorf("resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(n.cfg.ConnLow, n.cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return fmt.Errorf("connection manager: %w", err)
	}
	if err := probeListen(n.cfg.Listen); err != nil {
		rm.Close()
		return err
	}
	opts := []libp2p.Option{
		libp2p.Identity(n.key),
		libp2p.ListenAddrStrings(n.cfg.Listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		// Peers this node's reputation book has blocked are refused.
		libp2p.ConnectionGater(reputation.NewGater(n.book, n.log)),
		libp2p.PrometheusRegisterer(reg),
	}
	netOpts, punches, ports := n.networkOptions(reg)
	h, err := libp2p.New(append(opts, netOpts...)...)
	if err != nil {
		rm.Close()
		return fmt.Errorf("start libp2p host on %v: %w", n.cfg.Listen, err)
	}
	n.host = h
	n.push(h.Close)
	n.reach = &reachTracker{cfg: n.cfg.Network, h: h, log: n.log, punches: punches, ports: ports, since: time.Now(),
		s: reachState{autonat: n.cfg.Network.forcedReachability()}}
	n.exchange = reputation.NewExchange(h, n.book, n.log)
	return nil
}

func (n *Node) startDHT(ctx context.Context) error {
	boot, err := n.cfg.BootstrapPeers()
	if err != nil {
		return err
	}
	// Records kept for others are bounded; those of peers this node has
	// evidence about (its contract partners) are never evicted.
	limits := offer.DefaultStoreLimits()
	limits.Keep = func(p peer.ID) bool { return n.book.Score(p).Evidence > 0 }
	mode := dht.Mode(dhtOption(n.cfg.Network.DHTMode, n.reach.private))
	d, err := offer.NewDHT(n.host, true, boot, offer.NewRecordStore(n.host.ID(), limits), mode)
	if err != nil {
		return err
	}
	n.dht = d
	n.push(d.Close)
	n.reach.keeper.setFinder(n.relayCandidates)
	for _, b := range boot {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := n.host.Connect(cctx, b); err != nil {
			n.log.Warn("bootstrap peer unreachable", "peer", b.ID, "err", err)
		}
		cancel()
	}
	if err := d.Bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap dht: %w", err)
	}
	return nil
}

// startMarket builds the meter, the offer publisher and discovery; runMarket
// starts them once the contract engines exist (the meter asks the seller
// what contracts hold).
func (n *Node) startMarket() error {
	m, err := meter.New(n.cfg.Meter, n.cfg.DataDir, meter.HeldFunc(n.held), n.log)
	if err != nil {
		return err
	}
	n.meter = m
	pub, err := offer.NewPublisher(offer.PublisherConfig{
		Key:    n.key,
		Router: n.dht,
		Addrs:  n.offerAddrs,
		TTL:    n.cfg.Offer.TTL,
		Log:    n.log,
		OnPublish: func(o *offer.Offer) {
			n.metrics.published.Inc()
		},
	})
	if err != nil {
		return err
	}
	n.pub = pub
	n.reach.setOnAddrs(func() {
		if err := pub.Refresh(); err != nil {
			n.log.Warn("re-sign offer with new addresses", "err", err)
		}
	})
	n.disc = offer.NewDiscoverer(offer.DiscovererConfig{
		Host:   n.host,
		Finder: n.dht,
		Log:    n.log,
		OnReject: func(peer.ID, error) {
			n.metrics.rejected.Inc()
		},
	})
	n.host.SetStreamHandler(offer.ProtocolID, offer.Handler(pub.Envelope, n.log))
	n.push(func() error { n.host.RemoveStreamHandler(offer.ProtocolID); return nil })

	m.OnChange = func(spare meter.Capacity) {
		if !n.selling() {
			spare = meter.Capacity{} // nothing to sell with: see notSelling
		}
		if err := pub.Set(n.offerTemplate(spare)); err != nil {
			n.log.Warn("sign offer", "err", err)
		}
	}
	return nil
}

func (n *Node) runMarket(ctx context.Context) {
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.pub.Run(ctx) }()
	go func() {
		defer n.wg.Done()
		if err := n.meter.Run(ctx); err != nil {
			n.log.Error("meter stopped", "err", err)
		}
	}()
	if n.sandbox != nil && len(n.reprobe) > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.reprobeRuntimes(ctx, sandbox.ReprobeDelays(n.sandbox.ProbeTimeout())) }()
	}
	if n.payments != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.tickChain(ctx) }()
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.runClosePolicy(ctx) }()
	}
}

// offerTemplate turns spare capacity and the operator's prices into the
// terms of an offer. Prices are configured in (fractional) sats and offered
// in millisats.
func (n *Node) offerTemplate(spare meter.Capacity) offer.Offer {
	p := n.meter.Policy().Pricing
	msat := func(sats float64) uint64 { return uint64(math.Round(sats * 1000)) }
	var payKey []byte
	if n.payments != nil {
		// The key only: SellerTerms hands out a fresh payout xpub child
		// each call, and offers are rebuilt on every republish.
		if k, err := n.payments.SellerKey(); err == nil {
			payKey = k.PubKey().SerializeCompressed()
		}
	}
	return offer.Offer{
		Resources:  toResources(spare),
		PaymentKey: payKey,
		Network:    payment.CanonicalNetwork(n.cfg.Payment.Network),
		Prices: offer.Prices{
			CoreHour:    msat(p.CoreHour),
			MemGiBHour:  msat(p.MemoryGiBHour),
			DiskGiBHour: msat(p.DiskGiBHour),
			EgressGiB:   msat(p.EgressGiB),
			StartFee:    msat(p.StartFee),
		},
		MinDuration:     n.cfg.Offer.MinDuration,
		MaxDuration:     n.cfg.Offer.MaxDuration,
		BillingInterval: n.cfg.Offer.BillingInterval,
		Runtimes:        n.offeredRuntimes(),
		Region:          n.cfg.Region,
	}
}

func (n *Node) serveMetrics(reg *prometheus.Registry) error {
	ln, err := net.Listen("tcp", n.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics_addr %s: %w", n.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", n.serveHealthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	n.push(srv.Close)
	n.metricsAddr = ln.Addr().String()
	n.log.Info("serving metrics", "addr", n.metricsAddr)
	return nil
}

func (n *Node) trackPeers(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		n.metrics.peers.Set(float64(len(n.host.Network().Peers())))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Status implements api.Backend.
func (n *Node) Status(ctx context.Context) (api.Status, error) {
	snap := n.meter.Snapshot()
	s := api.Status{
		Version:       n.version,
		PeerID:        n.host.ID().String(),
		StartedAt:     n.started,
		UptimeSeconds: time.Since(n.started).Seconds(),
		OnOffer:       snap.Spare,
		Reason:        string(snap.Reason),
		Selling:       n.selling(),
		Buying:        n.buying(),
		NotSelling:    n.notSelling(),
		NotBuying:     n.notBuying(),
		ChainSource:   n.chainStatus(),
		Measured:      snap.Measured,
		Held:          snap.Held,
		DataDir:       n.cfg.DataDir,
		DashboardURL:  n.dashboardURL,
		MetricsAddr:   n.metricsAddr,
		Reachability:  n.reach.view(),
	}
	if !s.Selling {
		s.OnOffer = meter.Capacity{}
		s.Reason = "not selling: " + strings.Join(s.NotSelling, "; ")
	}
	for _, a := range n.host.Addrs() {
		s.Addrs = append(s.Addrs, a.String()+"/p2p/"+n.host.ID().String())
	}
	for _, p := range n.host.Network().Peers() {
		s.Peers = append(s.Peers, p.String())
	}
	slices.Sort(s.Peers)
	if o, _ := n.pub.Current(); o != nil {
		s.OfferSeq, s.OfferExpiry = o.Seq, o.Expiry
	}
	if n.buyer != nil {
		s.UnreachableSellers = unreachableSellers(n.buyer.Unreachable())
	}
	if n.payments != nil {
		p := n.payments.Payout()
		s.Payout = &p
		zc := n.payments.ZeroConf()
		s.ZeroConf = &zc
	}
	s.Bitcoin = n.bitcoinStatus(ctx)
	return s, nil
}

// unreachableSellers is status's list of the sellers the buyer ranks last,
// soonest to expire first.
func unreachableSellers(m map[peer.ID]time.Time) []api.UnreachableSeller {
	var out []api.UnreachableSeller
	for p, until := range m {
		out = append(out, api.UnreachableSeller{Peer: p.String(), Until: until})
	}
	slices.SortFunc(out, func(a, b api.UnreachableSeller) int {
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		return strings.Compare(a.Peer, b.Peer)
	})
	return out
}

// Offer implements api.Backend.
func (n *Node) Offer(ctx context.Context) (api.Offer, error) {
	o, env := n.pub.Current()
	if o == nil {
		return api.Offer{}, fmt.Errorf("%w: nothing measured yet", api.ErrNotFound)
	}
	return api.OfferView(o, offer.Filter{}.Price(o), env), nil
}

// Market implements api.Backend.
func (n *Node) Market(ctx context.Context, req api.MarketRequest) ([]api.Offer, error) {
	timeout := 30 * time.Second
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	found, err := n.disc.Find(ctx, req.Filter)
	if err != nil {
		return nil, err
	}
	out := make([]api.Offer, 0, len(found))
	for _, o := range found {
		out = append(out, api.OfferView(o, req.Filter.Price(o), nil))
	}
	return out, nil
}
