package health

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// lightChain is Chain for the embedded light client (payment.backend
// neutrino): running, with peers, on payment.network, caught up.
func lightChain(ctx context.Context, cfg payment.Config, src ChainSource, now time.Time, noClock Check) []Check {
	from := "the network's DNS seeds"
	if len(cfg.Peers) > 0 {
		from = "payment.peers (" + strings.Join(cfg.Peers, ", ") + ")"
	}
	if src == nil {
		if err := cfg.PeersDial(ctx, dialTimeout); err != nil {
			return []Check{{Name: NamePayments, Status: Fail,
				Detail: fmt.Sprintf("no Bitcoin peer of %s accepts a connection: %v", from, err),
				Fix:    "start the Bitcoin node payment.peers names, or set payment.peers to nodes that serve compact filters (BIP157)"}, noClock}
		}
		return []Check{{Name: NamePayments, Status: Warn, Detail: "the light client is not running in this process (it runs inside `blackbox serve`)",
			Fix: "start the node; `blackbox status` then shows the chain"}, noClock}
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := src.Info(ictx)
	if err != nil {
		return []Check{{Name: NamePayments, Status: Fail, Detail: "the light client does not answer: " + err.Error(),
			Fix: "restart the node; if it persists, remove the light client's headers (neutrino/ in the data dir) to sync them anew"}, noClock}
	}
	if info.Peers == 0 {
		return []Check{{Name: NamePayments, Status: Fail,
			Detail: fmt.Sprintf("the light client has no Bitcoin peers (from %s); tip %d", from, info.Height),
			Fix:    "allow outbound TCP to Bitcoin nodes (port 8333 on mainnet), or set payment.peers to nodes that serve compact filters (BIP157)"}, noClock}
	}
	net := payment.CanonicalNetwork(cfg.Network)
	pay := Check{Name: NamePayments, Status: OK, Detail: fmt.Sprintf("light client on %s with %d peers (%s)", net, info.Peers, from)}
	if info.Network != net {
		pay = Check{Name: NamePayments, Status: Fail, Detail: fmt.Sprintf("the light client follows %s, but payment.network is %s", info.Network, cfg.Network),
			Fix: "remove neutrino/ in the data dir, or fix payment.network"}
	}
	return []Check{pay, Sync(cfg.Network, info, now), Clock(cfg.Network, info, now)}
}
