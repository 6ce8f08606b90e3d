package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
)

// ErrPaymentsRequired is serve's error when payment.required holds and
// payments cannot start: the process exits with the reason instead of
// running without earning.
var ErrPaymentsRequired = errors.New("payments cannot start and payment.required is set")

// nodeHealth is what the node remembers for its health report.
type nodeHealth struct {
	// payOff is the check that turned payments off at start, if one did.
	payOff *health.Check
}

var _ api.HealthBackend = (*Node)(nil)

// UnderSystemd reports whether this process is a systemd service's main
// process: systemd (248+) sets SYSTEMD_EXEC_PID to it. Older ones set
// INVOCATION_ID (and NOTIFY_SOCKET for Type=notify), which every process
// started from a service inherits too, so then only a child of PID 1
// counts (a system service; a user service's node is not detected).
func UnderSystemd() bool {
	if pid := os.Getenv("SYSTEMD_EXEC_PID"); pid != "" {
		return pid == strconv.Itoa(os.Getpid())
	}
	return (os.Getenv("INVOCATION_ID") != "" || os.Getenv("NOTIFY_SOCKET") != "") && os.Getppid() == 1
}

// checkChainAtStart runs the payments check on the chain source before the
// wallet is opened against it: a dead btcd or one on another network is
// said in a sentence at once, rather than after btcwallet's retries.
// It returns the reason payments are off, or "".
func (n *Node) checkChainAtStart(ctx context.Context, chain health.ChainSource) string {
	for _, c := range health.Chain(ctx, n.cfg.Payment, chain, time.Now()) {
		if c.Name == health.NamePayments && c.Status == health.Fail {
			n.health.payOff = &c
			return c.Detail + " (" + c.Fix + ")"
		}
	}
	return ""
}

// requirePayments is serve's payment.required rule.
func (n *Node) requirePayments() error {
	if n.payments != nil || !n.cfg.Payment.IsRequired(UnderSystemd()) {
		return nil
	}
	return fmt.Errorf("%w: %s; or set payment.required: false to run without them", ErrPaymentsRequired, n.noBuy)
}

// Health is the node's answer to "can it earn": the sandbox as it started,
// payments now (the chain source asked live, the wallet held open),
// the clock, the disk and reachability. It implements api's health call.
func (n *Node) Health(ctx context.Context) (health.Report, error) {
	var checks []health.Check
	if n.sandbox != nil {
		checks = append(checks, health.Check{Name: "sandbox", Status: health.OK,
			Detail: "jobs run under " + strings.Join(n.offeredRuntimes(), ", ") + " (probe job at start)"})
	} else {
		var why []string
		for _, r := range n.noSell {
			if r != n.noBuy {
				why = append(why, r)
			}
		}
		checks = append(checks, health.Check{Name: "sandbox", Status: health.Fail,
			Detail: "unavailable since start: " + strings.Join(why, "; "),
			Fix:    "fix what `blackbox doctor` reports, then restart the node (systemctl restart blackbox)"})
	}
	checks = append(checks, n.paymentChecks(ctx)...)
	if n.meter != nil {
		checks = append(checks, health.Disk(n.cfg.DataDir, n.meter.Policy(), n.cfg.Sandbox))
	}
	if n.reach != nil {
		checks = append(checks, health.ReachabilityOf(n.reachHealth(), n.host.Network().ListenAddresses()))
	}
	return health.NewReport(checks), nil
}

func (n *Node) paymentChecks(ctx context.Context) []health.Check {
	if n.payments == nil {
		c := health.Check{Name: health.NamePayments, Status: health.Fail,
			Detail: "off since start: " + n.noBuy,
			Fix:    "fix that, then restart the node (systemctl restart blackbox); `blackbox doctor` checks each part"}
		if n.health.payOff != nil {
			c.Fix = n.health.payOff.Fix + "; then restart the node (systemctl restart blackbox)"
		}
		return []health.Check{c, {Name: health.NameClock, Status: health.Warn,
			Detail: "not compared: no chain source to compare with", Fix: "fix payments above"}}
	}
	// The wallet is open in this process: it cannot be tried again here.
	return health.WithWallet(health.Chain(ctx, n.cfg.Payment, n.chain, time.Now()), n.wallet.check(filepath.Join(n.cfg.DataDir, WalletDir)))
}

// serveHealthz answers /healthz next to /metrics: 200 with the checks when
// the node can earn, 503 with them (and the reasons) when it cannot.
func (n *Node) serveHealthz(w http.ResponseWriter, r *http.Request) {
	rep, _ := n.Health(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !rep.CanEarn {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

// reachHealth is the reachability check's input from the node's view.
func (n *Node) reachHealth() health.Reach {
	v := n.reach.view()
	return health.Reach{State: v.State, Forced: v.Source == "config", PublicAddrs: v.PublicAddrs, PublicAddrsFrom: v.PublicAddrsFrom,
		RelayAddrs: v.RelayAddrs, Relays: v.Relays, HolePunching: v.HolePunching,
		NATTCP: v.NAT.TCP, NATUDP: v.NAT.UDP, PortMapping: v.PortMapping, MappedAddrs: v.MappedAddrs, PortMappingProtocol: v.PortMappingProtocol, Internet: !n.reach.private}
}
