package node

import (
	"runtime"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus series, served on metrics_addr at
// /metrics. docs/metrics.md documents every one (a test keeps the two
// equal); names are stable: a change is a breaking change for the
// operators' dashboards and alerts.
//
// Most series are read from the node's state when Prometheus scrapes
// (stateCollector): the payment channels, the contract records, the
// meter's snapshot, the current offer. They survive a restart. The few
// event counters and the phase histogram are kept here and start at zero.
type metrics struct {
	published prometheus.Counter
	rejected  prometheus.Counter
	peers     prometheus.Gauge
	phases    *prometheus.HistogramVec

	mu      sync.Mutex
	tip     int32
	tipAt   time.Time // the last time the chain answered
	tipErr  error
	tipSeen bool
}

// phaseBuckets span a job's phases: milliseconds (a receipt) to a day (a
// long run).
var phaseBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blackbox", Name: "offers_published_total",
			Help: "Signed offers this node published to the DHT since it started.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blackbox", Name: "offers_rejected_total",
			Help: "Offers from peers refused as forged, expired, replayed or malformed since the node started.",
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "blackbox", Name: "peers",
			Help: "Connected libp2p peers.",
		}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "blackbox", Name: "job_phase_duration_seconds",
			Help:    "How long the phases of jobs took, by role (seller, buyer) and phase (docs/metrics.md lists them).",
			Buckets: phaseBuckets,
		}, []string{"role", "phase"}),
	}
	reg.MustRegister(m.published, m.rejected, m.peers, m.phases,
		&stateCollector{n: n, m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// phase is the contract engines' OnPhase.
func (m *metrics) phase(role contract.Role, phase string, d time.Duration) {
	m.phases.WithLabelValues(role.String(), phase).Observe(d.Seconds())
}

// chainTip records what the chain answered at a tick (the node's chain loop
// calls it).
func (m *metrics) chainTip(tip int32, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tipErr = err
	if err == nil {
		m.tip, m.tipAt, m.tipSeen = tip, time.Now(), true
	}
}

// chainStale is how long without an answer from the chain makes payments
// down.
const chainStale = 30 * time.Second

func (m *metrics) chain() (tip int32, seen, up bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tip, m.tipSeen, m.tipErr == nil && m.tipSeen && time.Since(m.tipAt) < chainStale
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("blackbox_"+name, help, labels, nil)
}

var (
	descEarned = desc("earned_sats",
		"Sats this node earned as a seller, by state: settled (in channels closed on chain), channel (in open channels, for contracts that ended), pending (in contracts still running).", "state")
	descFees = desc("fees_paid_sats_total",
		"On-chain fees this node paid for the channel closes and refunds it broadcast.")
	descContracts = desc("contracts",
		"Contracts this node keeps, by role (seller, buyer) and state (proposed … settled, rejected, expired, failed, refunded, disputed).", "role", "state")
	descJobs = desc("jobs",
		"This node's jobs as a buyer, by state (searching, running, done, failed, cancelled).", "state")
	descRefusals = desc("refusals_total",
		"Proposals this node refused as a seller since it started, by reason (capacity, price, duration, runtime, expired, malformed, replayed, policy; unreachable: accepted, then given up by a buyer that could not reach this node well enough).", "reason")
	descCPU = desc("capacity_cpu_cores",
		"CPU by kind: total (the machine), free (idle as measured), reserved (kept for the owner), held (sold to running contracts), spare (on offer).", "kind")
	descMemory = desc("capacity_memory_bytes",
		"Memory by kind: total, free, reserved, held, spare (as blackbox_capacity_cpu_cores).", "kind")
	descDisk = desc("capacity_disk_bytes",
		"Disk of the data dir's filesystem by kind: total, free, reserved, held, spare (as blackbox_capacity_cpu_cores).", "kind")
	descBandwidth = desc("capacity_bandwidth_bytes_per_second",
		"Uplink by kind: total (declared), free (as real transfers achieved), reserved, held, spare.", "kind")
	descPrice = desc("offer_price_sats",
		"The current offer's prices, by item: cpu_core_hour, memory_gib_hour, disk_gib_hour, egress_gib, start (fee per contract).", "item")
	descChannels = desc("channels",
		"Payment channels by role (buyer, seller) and state (pending, open, closing, closed, failed).", "role", "state")
	descChanCap = desc("channel_capacity_sats",
		"Funding value of the payment channels, by role and state.", "role", "state")
	descChanPaid = desc("channel_paid_sats",
		"Cumulative amount due to the seller in the payment channels (the latest signed payment), by role and state.", "role", "state")
	descPayout = desc("payout_sats",
		"Where the seller's money in channels is: in_channels (open), close_fee (what closing them costs now), after_close (what those closes leave), unclaimable (held where a close would pay only dust), closing (closes not confirmed, after fees), settled (paid to the payout address, after fees), lost (refunded to buyers at expiry).", "state")
	descWallet = desc("wallet_balance_sats",
		"The node's wallet balance, by kind: spendable (confirmed), total.", "kind")
	descPaymentsUp = desc("payments_up",
		"1 when payments are on and the chain answered within the last 30 s, else 0.")
	descHeight = desc("chain_height",
		"Height of the chain's tip as the node last saw it.")
	descWalletHeight = desc("wallet_synced_height",
		"The last block the node's wallet has processed (absent while it is not open); behind chain_height while it resyncs.")
	descReach = desc("reachability",
		"1 for the node's reachability as AutoNAT (or network.reachability) says: unknown, public, private (behind NAT, through a relay slot) or unreachable (behind NAT, no relay slot).", "reachability")
	descPunches = desc("holepunch_attempts_total",
		"Hole punches (DCUtR upgrades of relayed connections to direct ones) since start: one per upgrade on the side that runs it, one per round on the other.")
	descPunched = desc("holepunch_success_total",
		"Hole punches that ended with a direct connection since start.")
	descSlots = desc("relay_slots",
		"Relay slots (circuit relay v2 reservations) this node holds on relays.")
	descSelling = desc("selling",
		"1 when the node can sell (sandbox and payments up, its chain source answering), else 0; `blackbox status` says why not.")
	descBuying = desc("buying",
		"1 when the node can buy (payments up, its wallet open and at the chain's tip), else 0.")
	descBuild = desc("build_info",
		"Always 1; the labels say which blackbox runs.", "version", "goversion")
)

// stateCollector reads the node's state at scrape time.
type stateCollector struct {
	n *Node
	m *metrics
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEarned, descFees, descContracts, descJobs, descRefusals,
		descCPU, descMemory, descDisk, descBandwidth, descPrice, descChannels, descChanCap, descChanPaid, descPayout,
		descWallet, descPaymentsUp, descHeight, descWalletHeight, descReach, descPunches, descPunched, descSlots, descSelling, descBuying, descBuild} {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge(ch, descBuild, 1, n.version, runtime.Version())
	gauge(ch, descSelling, boolf(n.selling()))
	gauge(ch, descBuying, boolf(n.buying()))
	if c := n.chainStatus(); c != nil && c.WalletHeight > 0 {
		gauge(ch, descWalletHeight, float64(c.WalletHeight))
	}
	_, _, up := c.m.chain()
	gauge(ch, descPaymentsUp, boolf(n.payments != nil && up))
	if tip, seen, _ := c.m.chain(); seen {
		gauge(ch, descHeight, float64(tip))
	}
	if n.reach != nil {
		v := n.reach.view()
		gauge(ch, descReach, 1, v.State)
		ch <- prometheus.MustNewConstMetric(descPunches, prometheus.CounterValue, float64(v.HolePunch.Attempts))
		ch <- prometheus.MustNewConstMetric(descPunched, prometheus.CounterValue, float64(v.HolePunch.Successes))
		gauge(ch, descSlots, float64(len(v.Relays)))
	}
	c.collectCapacity(ch)
	live := c.collectContracts(ch, n.engineMachine())
	c.collectChannels(ch, live)
	if n.wallet != nil {
		if s, t, err := n.wallet.Balance(1); err == nil {
			gauge(ch, descWallet, float64(s), "spendable")
			gauge(ch, descWallet, float64(t), "total")
		}
	}
	if n.pub != nil {
		if o, _ := n.pub.Current(); o != nil {
			p := o.Prices
			for item, msat := range map[string]uint64{"cpu_core_hour": p.CoreHour, "memory_gib_hour": p.MemGiBHour,
				"disk_gib_hour": p.DiskGiBHour, "egress_gib": p.EgressGiB, "start": p.StartFee} {
				gauge(ch, descPrice, float64(msat)/1000, item)
			}
		}
	}
}

func (c *stateCollector) collectCapacity(ch chan<- prometheus.Metric) {
	n := c.n
	if n.meter == nil {
		return
	}
	snap := n.meter.Snapshot()
	spare := snap.Spare
	if n.seller == nil {
		spare = meter.Capacity{} // nothing to sell with: see blackbox_selling
	}
	kinds := map[string]meter.Capacity{
		"total": snap.Measured.Total, "free": snap.Measured.Free,
		"reserved": n.meter.Policy().Reserve, "held": snap.Held, "spare": spare,
	}
	for kind, cp := range kinds {
		for _, v := range []struct {
			d     *prometheus.Desc
			v     int64
			scale float64
		}{{descCPU, cp.MilliCPU, 1e-3}, {descMemory, cp.Memory, 1}, {descDisk, cp.Disk, 1}, {descBandwidth, cp.Bandwidth, 1.0 / 8}} {
			if v.v < 0 || v.v == meter.Unlimited {
				continue
			}
			gauge(ch, v.d, float64(v.v)*v.scale, kind)
		}
	}
}

// engineMachine is a contract state machine over the node's store (the
// seller's and the buyer's share it), nil without either engine.
func (n *Node) engineMachine() *contract.Machine {
	switch {
	case n.seller != nil:
		return n.seller.Machine()
	case n.buyer != nil:
		return n.buyer.Machine()
	}
	return nil
}

// collectContracts counts the contracts and jobs, and returns the IDs of
// the seller's contracts that have not ended (they hold capacity).
func (c *stateCollector) collectContracts(ch chan<- prometheus.Metric, mc *contract.Machine) (live map[string]bool) {
	n := c.n
	live = map[string]bool{}
	if mc != nil {
		if recs, err := mc.Summaries(0); err == nil {
			count := map[[2]string]int{}
			for _, r := range recs {
				count[[2]string{r.Role.String(), r.State.String()}]++
				if r.Role == contract.RoleSeller && r.State.Holds() {
					live[r.ID] = true
				}
			}
			for k, v := range count {
				gauge(ch, descContracts, float64(v), k[0], k[1])
			}
		}
	}
	if n.buyer != nil {
		if jobs, err := n.buyer.Jobs(); err == nil {
			count := map[contract.JobState]int{}
			for _, j := range jobs {
				count[j.State]++
			}
			for s, v := range count {
				gauge(ch, descJobs, float64(v), string(s))
			}
		}
	}
	if n.seller != nil {
		for r, v := range n.seller.Rejections() {
			ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(v), string(r))
		}
	}
	return live
}

// collectChannels sums the channels and what the seller earned in them:
// the money of contracts in live (not ended) is pending.
func (c *stateCollector) collectChannels(ch chan<- prometheus.Metric, live map[string]bool) {
	n := c.n
	if n.payments == nil {
		return
	}
	earned := map[string]int64{"settled": 0, "channel": 0, "pending": 0}
	var fees int64
	type key [2]string
	count, capacity, paid := map[key]int64{}, map[key]int64{}, map[key]int64{}
	for _, c := range n.payments.Channels() {
		k := key{c.Role.String(), c.State.String()}
		count[k]++
		capacity[k] += c.Capacity
		paid[k] += c.Paid
		fees += c.SpendFee()
		if c.Role != payment.RoleSeller || c.State == payment.StateFailed {
			continue
		}
		for id, amt := range c.Contracts {
			switch {
			case live[id]:
				earned["pending"] += amt
			case c.State == payment.StateClosed:
				earned["settled"] += amt
			default:
				earned["channel"] += amt
			}
		}
	}
	for s, v := range earned {
		gauge(ch, descEarned, float64(v), s)
	}
	ch <- prometheus.MustNewConstMetric(descFees, prometheus.CounterValue, float64(fees))
	h := payment.Hold(n.payments.Channels())
	for s, v := range map[string]int64{"in_channels": h.InChannels, "close_fee": h.CloseFee, "after_close": h.AfterClose,
		"unclaimable": h.Unclaimable, "closing": h.Closing, "settled": h.Settled, "lost": h.Lost,
		"sweeping": h.Sweeping, "sweep_fee": h.SweepFee} {
		gauge(ch, descPayout, float64(v), s)
	}
	for k, v := range count {
		gauge(ch, descChannels, float64(v), k[0], k[1])
		gauge(ch, descChanCap, float64(capacity[k]), k[0], k[1])
		gauge(ch, descChanPaid, float64(paid[k]), k[0], k[1])
	}
}
