package node

import (
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus series, served on metrics_addr.
type metrics struct {
	spare     *prometheus.GaugeVec
	published prometheus.Counter
	rejected  prometheus.Counter
	peers     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		spare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "blackbox", Name: "spare_capacity",
			Help: "Capacity on offer now, by resource (cpu in millicores, memory and disk in bytes, bandwidth in bits/s).",
		}, []string{"resource"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blackbox", Name: "offers_published_total",
			Help: "Signed offers published to the DHT.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blackbox", Name: "offers_rejected_total",
			Help: "Offers from peers refused as forged, expired, replayed or malformed.",
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "blackbox", Name: "peers",
			Help: "Connected libp2p peers.",
		}),
	}
	reg.MustRegister(m.spare, m.published, m.rejected, m.peers)
	return m
}

func (m *metrics) setSpare(c meter.Capacity) {
	m.spare.WithLabelValues("cpu").Set(float64(c.MilliCPU))
	m.spare.WithLabelValues("memory").Set(float64(c.Memory))
	m.spare.WithLabelValues("disk").Set(float64(c.Disk))
	m.spare.WithLabelValues("bandwidth").Set(float64(c.Bandwidth))
}
