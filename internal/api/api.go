// Package api is the node's local control API: HTTP+JSON on a unix socket in
// the data dir, used by the CLI (and later a dashboard). It is never exposed
// to peers. Access control is the socket's file mode (0600, in a 0700 data
// dir): only the node's owner (and root) can connect; WithGroup lets the
// members of one group connect too (0660, data dir 0710).
package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// SocketFile is the API socket's name inside the data dir.
const SocketFile = "blackbox.sock"

// SocketPath is where the daemon of dataDir listens.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, SocketFile) }

// Status is what `blackbox status` shows.
type Status struct {
	Version       string         `json:"version"`
	PeerID        string         `json:"peer_id"`
	Addrs         []string       `json:"addrs"`
	Peers         []string       `json:"peers"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	OnOffer       meter.Capacity `json:"on_offer"`
	Reason        string         `json:"reason"`
	// Selling and Buying say whether the contract engines run; NotSelling
	// and NotBuying say why not (sandbox or payments unavailable).
	Selling     bool           `json:"selling"`
	Buying      bool           `json:"buying"`
	NotSelling  []string       `json:"not_selling,omitempty"`
	NotBuying   string         `json:"not_buying,omitempty"`
	Measured    meter.Measured `json:"measured"`
	Held        meter.Capacity `json:"held"`
	OfferSeq    uint64         `json:"offer_seq,omitempty"`
	OfferExpiry time.Time      `json:"offer_expiry,omitzero"`
	DataDir     string         `json:"data_dir"`
	// DashboardURL is where the web dashboard is served ("" when off).
	DashboardURL string `json:"dashboard_url,omitempty"`
	// MetricsAddr is where /metrics and /healthz are served ("" when
	// off): metrics_addr with its port resolved (metrics_addr may say :0).
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Reachability is whether and how peers elsewhere reach the node.
	Reachability Reachability `json:"reachability"`
	// Bitcoin is the chain the node pays on: payment.network, the
	// backend, and the fee rate it would pay now with where it came from
	// (FeeSource: estimate, blocks, url or fallback).
	Bitcoin BitcoinStatus `json:"bitcoin"`
	// UnreachableSellers are the sellers this node, buying, could not
	// reach (no direct connection, no relayed one whose limits fit) and so
	// ranks last until Until (contract.unreachable_for after the refusal;
	// kept across restarts), soonest to expire first.
	UnreachableSellers []UnreachableSeller `json:"unreachable_sellers,omitempty"`
	// Payout is where the seller's closes pay and when its close policy
	// makes them (nil when payments are off).
	Payout *payment.PayoutPolicy `json:"payout,omitempty"`
	// ZeroConf is the seller's exposure to channel fundings it works on
	// before they confirm (payment.zero_conf_max bounds it); nil without
	// payments.
	ZeroConf *payment.ZeroConfView `json:"zero_conf,omitempty"`
	// ChainSource is the payment chain source's state, height and the
	// wallet's synced height (nil when payments are off).
	ChainSource *ChainSource `json:"chain_source,omitempty"`
}

// BitcoinStatus is status's view of the node's Bitcoin network and fees.
type BitcoinStatus struct {
	Network string `json:"network"`
	Backend string `json:"backend"`
	// Height is the chain source's tip (0 when payments are off).
	Height int32 `json:"height,omitempty"`
	// FeeSource and FeeRate (sat/vB, clamped to the configured bounds)
	// are the rate a funding or close would pay now.
	FeeSource string `json:"fee_source,omitempty"`
	FeeRate   int64  `json:"fee_rate,omitempty"`
}

// UnreachableSeller is a seller ranked last because the buyer could not
// reach it.
type UnreachableSeller struct {
	Peer  string    `json:"peer"`
	Until time.Time `json:"until"`
}

// Reachability is what the node knows of its reachability from outside:
// AutoNAT's verdict (or the forced network.reachability), the addresses
// peers reach it at, the relays it holds slots on, its NAT's kind, and
// what that makes of the DHT, the relay service and hole punching. The
// field names are stable: scripts and tests read them.
type Reachability struct {
	// State is unknown (no verdict yet), public (peers dial it directly),
	// private (behind NAT, reachable through the relays below) or
	// unreachable (behind NAT with no relay slot: only its LAN reaches it).
	State string `json:"state"`
	// Source is autonat, or config when network.reachability forces it.
	Source string `json:"source"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// PublicAddrs are its public addresses, as PublicAddrsFrom says:
	// confirmed (AutoNAT v2 dialled them back), listen (a public node's
	// own), or observed (what peers saw it at through identify: behind
	// NAT, its router's address and port, not known to be reachable).
	PublicAddrs []string `json:"public_addrs,omitempty"`
	// PublicAddrsFrom is confirmed, listen or observed ("" when none).
	PublicAddrsFrom string `json:"public_addrs_from,omitempty"`
	// RelayAddrs are its /p2p-circuit addresses (in host.Addrs and offers).
	RelayAddrs []string `json:"relay_addrs,omitempty"`
	// Relays are the peer IDs of the relays it holds a slot on.
	Relays []string `json:"relays,omitempty"`
	// NAT is the NAT's mapping behaviour per transport, from the addresses
	// peers observed: unknown, endpoint_independent (hole punching works)
	// or endpoint_dependent (symmetric: it rarely does).
	NAT NATTypes `json:"nat"`
	// HolePunching is the outlook for upgrading relayed connections:
	// possible, unlikely, unknown, not_needed (public), or off (disabled).
	HolePunching string `json:"hole_punching"`
	// DHTMode is server or client, as network.dht_mode's rule says now.
	DHTMode string `json:"dht_mode"`
	// RelayService says whether this node relays for others now.
	RelayService bool `json:"relay_service"`
	// PortMapping is what UPnP / NAT-PMP port mapping got (UPnP first,
	// then NAT-PMP): off
	// (network.port_mapping false), searching (for a router), no_router
	// (none answered), refused (a router answered, no port is mapped) or
	// mapped (MappedAddrs are the router's external addresses of the
	// listen ports; peers dial them directly).
	PortMapping string `json:"port_mapping"`
	// MappedAddrs are the external addresses the router maps to this
	// node's listen ports (UPnP / NAT-PMP).
	MappedAddrs []string `json:"mapped_addrs,omitempty"`
	// PortMappingProtocol is the protocol of the router that answered
	// (refused or mapped): upnp or natpmp.
	PortMappingProtocol string `json:"port_mapping_protocol,omitempty"`
	// HolePunch counts hole punches since start.
	HolePunch HolePunchCounts `json:"holepunch"`
}

// NATTypes is the NAT kind for TCP and for UDP (QUIC).
type NATTypes struct {
	TCP string `json:"tcp"`
	UDP string `json:"udp"`
}

// HolePunchCounts are DCUtR hole punches: each attempt is one upgrade of a
// relayed connection (on the side that runs it, up to 3 rounds; on the
// other, each round), a success ends with a direct connection. DirectDials
// are upgrades that needed no punch: DCUtR first dials the peer's public
// addresses (for a peer behind NAT, the ones others observed), and that
// dial gets through when the peer is public or its NAT already lets this
// node in (a cone NAT whose mapping the peer's own packets opened), so it
// counts between two homes too.
type HolePunchCounts struct {
	Attempts    uint64 `json:"attempts"`
	Successes   uint64 `json:"successes"`
	DirectDials uint64 `json:"direct_dials"`
}

// Offer is an offer as the CLI shows it.
type Offer struct {
	Seller       string          `json:"seller"`
	Addrs        []string        `json:"addrs"`
	Resources    offer.Resources `json:"resources"`
	Prices       offer.Prices    `json:"prices"`
	PricePerHour float64         `json:"price_per_hour_sat"`
	// PricePerJob is what a whole job of the market query costs there (filled
	// in by the CLI), start fee included; StartFee is that fee.
	PricePerJob     int64     `json:"price_per_job_sat,omitempty"`
	StartFee        int64     `json:"start_fee_sat"`
	MinDuration     float64   `json:"min_duration_seconds"`
	MaxDuration     float64   `json:"max_duration_seconds"`
	BillingInterval float64   `json:"billing_interval_seconds"`
	Runtimes        []string  `json:"runtimes"`
	Region          string    `json:"region,omitempty"`
	PaymentKey      string    `json:"payment_key,omitempty"`
	Seq             uint64    `json:"seq"`
	Issued          time.Time `json:"issued"`
	Expiry          time.Time `json:"expiry"`
	// Envelope is the signed record, base64 in JSON, for anyone who wants
	// to verify it themselves.
	Envelope []byte `json:"envelope,omitempty"`
}

// OfferView converts a verified offer for display; price is the hourly
// price of the request it was found for.
func OfferView(o *offer.Offer, price float64, env []byte) Offer {
	v := Offer{
		Seller:          o.Seller.String(),
		Resources:       o.Resources,
		Prices:          o.Prices,
		StartFee:        int64((o.Prices.StartFee + 999) / 1000),
		PricePerHour:    price,
		MinDuration:     o.MinDuration.Seconds(),
		MaxDuration:     o.MaxDuration.Seconds(),
		BillingInterval: o.BillingInterval.Seconds(),
		Runtimes:        o.Runtimes,
		Region:          o.Region,
		Seq:             o.Seq,
		Issued:          o.Issued,
		Expiry:          o.Expiry,
		Envelope:        env,
	}
	if len(o.PaymentKey) > 0 {
		v.PaymentKey = hex.EncodeToString(o.PaymentKey)
	}
	for _, a := range o.Addrs {
		v.Addrs = append(v.Addrs, a.String())
	}
	return v
}

// MarketRequest asks the daemon for offers matching a filter.
type MarketRequest struct {
	Filter offer.Filter `json:"filter"`
	// TimeoutSeconds bounds the search; 0 means the daemon's default.
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}

// Backend is what the daemon provides to the API.
type Backend interface {
	// Status reports the node's state.
	Status(ctx context.Context) (Status, error)
	// Offer returns this node's current offer, or an error wrapping
	// ErrNotFound when nothing is on offer.
	Offer(ctx context.Context) (Offer, error)
	// Market finds offers on the network.
	Market(ctx context.Context, req MarketRequest) ([]Offer, error)
	// Submit starts a job and returns its ID at once.
	Submit(ctx context.Context, req contract.Request) (string, error)
	// Jobs lists this node's jobs as a buyer; Job shows one.
	Jobs(ctx context.Context) ([]*contract.JobStatus, error)
	Job(ctx context.Context, id string) (*contract.JobStatus, error)
	// Cancel stops a job.
	Cancel(ctx context.Context, id string) error
	// Contracts is the seller's view: contracts, earnings, refusals.
	Contracts(ctx context.Context) (Contracts, error)
	// Channels lists payment channels; CloseChannel closes one on chain.
	Channels(ctx context.Context) ([]*payment.Channel, error)
	CloseChannel(ctx context.Context, id string) (string, error)
	// WalletAddress and WalletBalance serve the wallet while the daemon
	// holds it open.
	WalletAddress(ctx context.Context) (string, error)
	WalletBalance(ctx context.Context, minConf int32) (Balance, error)
	// Scores is this node's view of every peer it knows; Score of one.
	Scores(ctx context.Context) ([]reputation.Score, error)
	Score(ctx context.Context, p peer.ID) (reputation.Score, error)
	// Forget drops this node's own observations of p, and with them any
	// block they caused, and returns p's score after.
	Forget(ctx context.Context, p peer.ID) (reputation.Score, error)
	// Trust lists explicit trust edges; SetTrust sets one (0 removes it).
	Trust(ctx context.Context) ([]TrustEdge, error)
	SetTrust(ctx context.Context, p peer.ID, weight float64) error
	// Earnings is the seller's history since now-since (0: 24 h).
	Earnings(ctx context.Context, since time.Duration) (Earnings, error)
}

// TrustEdge is one peer this node trusts explicitly.
type TrustEdge struct {
	Peer    string    `json:"peer"`
	Weight  float64   `json:"weight"`
	Updated time.Time `json:"updated"`
}

// TrustEdges converts the book's edges for the API.
func TrustEdges(edges []reputation.Edge) []TrustEdge {
	out := make([]TrustEdge, 0, len(edges))
	for _, e := range edges {
		out = append(out, TrustEdge{Peer: e.To.String(), Weight: e.Weight, Updated: e.Updated})
	}
	return out
}

// TrustRequest sets this node's trust in a peer.
type TrustRequest struct {
	Weight float64 `json:"weight"`
}

// Contracts is what `blackbox contracts` shows.
type Contracts struct {
	Contracts []*contract.Record `json:"contracts"`
	// EarnedSats is what the seller holds acknowledged payments for, by
	// contract state.
	EarnedSats map[string]int64  `json:"earned_sat"`
	Rejections map[string]uint64 `json:"rejections"`
}

// Balance is the wallet's balance in sats.
type Balance struct {
	Spendable int64 `json:"spendable_sat"`
	Total     int64 `json:"total_sat"`
	// Network is the wallet's Bitcoin network (payment.network).
	Network string `json:"network,omitempty"`
}

// ErrUnavailable marks a request the node cannot serve in its current state
// (for example buying without payments).
var ErrUnavailable = errors.New("unavailable")

// IDResponse carries the ID of what a request created.
type IDResponse struct {
	ID string `json:"id"`
}

// ErrRefused marks a request the node refuses because of the user's own
// input (for example a job no offer fits, or a wallet that cannot pay
// for it); its message says what would work and reaches the client as it
// is.
var ErrRefused = errors.New("refused")

// refused is an ErrRefused from the daemon, its message unchanged.
type refused struct{ msg string }

func (e refused) Error() string        { return e.msg }
func (e refused) Is(target error) bool { return target == ErrRefused }

// ErrNotFound marks a request for something that does not exist.
var ErrNotFound = errors.New("not found")

// ErrNoDaemon is returned by the client when no daemon answers.
var ErrNoDaemon = errors.New("no blackbox daemon is running for this data dir")

type errorBody struct {
	Error string `json:"error"`
}

// Handler returns the API's HTTP handler.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		s, err := b.Status(r.Context())
		reply(w, log, s, err)
	})
	mux.HandleFunc("GET /v1/offer", func(w http.ResponseWriter, r *http.Request) {
		o, err := b.Offer(r.Context())
		reply(w, log, o, err)
	})
	mux.HandleFunc("POST /v1/market", func(w http.ResponseWriter, r *http.Request) {
		var req MarketRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		offers, err := b.Market(r.Context(), req)
		if offers == nil {
			offers = []Offer{}
		}
		reply(w, log, offers, err)
	})
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var req contract.Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		id, err := b.Submit(r.Context(), req)
		reply(w, log, IDResponse{ID: id}, err)
	})
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		jobs, err := b.Jobs(r.Context())
		if jobs == nil {
			jobs = []*contract.JobStatus{}
		}
		reply(w, log, jobs, err)
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if wait := r.URL.Query().Get("wait"); wait != "" {
			if jw, ok := b.(jobWaiter); ok {
				j, err := waitJob(r, jw, wait)
				reply(w, log, j, err)
				return
			}
		}
		j, err := b.Job(r.Context(), r.PathValue("id"))
		reply(w, log, j, err)
	})
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		err := b.Cancel(r.Context(), r.PathValue("id"))
		reply(w, log, IDResponse{ID: r.PathValue("id")}, err)
	})
	handleForward(mux, b, log)
	mux.HandleFunc("GET /v1/contracts", func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Contracts(r.Context())
		reply(w, log, c, err)
	})
	mux.HandleFunc("GET /v1/channels", func(w http.ResponseWriter, r *http.Request) {
		cs, err := b.Channels(r.Context())
		if cs == nil {
			cs = []*payment.Channel{}
		}
		reply(w, log, cs, err)
	})
	mux.HandleFunc("POST /v1/channels/{id}/close", func(w http.ResponseWriter, r *http.Request) {
		txid, err := b.CloseChannel(r.Context(), r.PathValue("id"))
		reply(w, log, IDResponse{ID: txid}, err)
	})
	mux.HandleFunc("GET /v1/wallet/address", func(w http.ResponseWriter, r *http.Request) {
		a, err := b.WalletAddress(r.Context())
		reply(w, log, IDResponse{ID: a}, err)
	})
	mux.HandleFunc("GET /v1/wallet/balance", func(w http.ResponseWriter, r *http.Request) {
		var minConf int32 = 1
		if v := r.URL.Query().Get("minconf"); v != "" {
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				reply(w, log, nil, fmt.Errorf("%w: minconf: %v", ErrBadRequest, err))
				return
			}
			minConf = int32(n)
		}
		bal, err := b.WalletBalance(r.Context(), minConf)
		reply(w, log, bal, err)
	})
	mux.HandleFunc("GET /v1/reputation", func(w http.ResponseWriter, r *http.Request) {
		scores, err := b.Scores(r.Context())
		if scores == nil {
			scores = []reputation.Score{}
		}
		reply(w, log, scores, err)
	})
	mux.HandleFunc("GET /v1/reputation/{peer}", func(w http.ResponseWriter, r *http.Request) {
		p, err := peer.Decode(r.PathValue("peer"))
		if err != nil {
			reply(w, log, nil, fmt.Errorf("%w: peer: %v", ErrBadRequest, err))
			return
		}
		sc, err := b.Score(r.Context(), p)
		reply(w, log, sc, err)
	})
	mux.HandleFunc("DELETE /v1/reputation/{peer}", func(w http.ResponseWriter, r *http.Request) {
		p, err := peer.Decode(r.PathValue("peer"))
		if err != nil {
			reply(w, log, nil, fmt.Errorf("%w: peer: %v", ErrBadRequest, err))
			return
		}
		sc, err := b.Forget(r.Context(), p)
		reply(w, log, sc, err)
	})
	mux.HandleFunc("GET /v1/trust", func(w http.ResponseWriter, r *http.Request) {
		edges, err := b.Trust(r.Context())
		if edges == nil {
			edges = []TrustEdge{}
		}
		reply(w, log, edges, err)
	})
	mux.HandleFunc("PUT /v1/trust/{peer}", func(w http.ResponseWriter, r *http.Request) {
		p, err := peer.Decode(r.PathValue("peer"))
		if err != nil {
			reply(w, log, nil, fmt.Errorf("%w: peer: %v", ErrBadRequest, err))
			return
		}
		var req TrustRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		reply(w, log, IDResponse{ID: p.String()}, b.SetTrust(r.Context(), p, req.Weight))
	})
	mux.HandleFunc("GET /v1/earnings", func(w http.ResponseWriter, r *http.Request) {
		since, err := ParseSince(r.URL.Query().Get("since"))
		if err != nil {
			reply(w, log, nil, fmt.Errorf("%w: since: %v", ErrBadRequest, err))
			return
		}
		e, err := b.Earnings(r.Context(), since)
		reply(w, log, e, err)
	})
	handleHealth(mux, b, log)
	walletRoutes(mux, b, log)
	configRoutes(mux, b, log)
	escrowRoutes(mux, b, log)
	reservationRoutes(mux, b, log)
	return mux
}

// ErrBadRequest marks a request with bad arguments.
var ErrBadRequest = errors.New("bad request")

func reply(w http.ResponseWriter, log *slog.Logger, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, ErrBadRequest), errors.Is(err, contract.ErrInvalid):
			code = http.StatusBadRequest
		case errors.Is(err, ErrUnavailable):
			code = http.StatusServiceUnavailable
		case errors.Is(err, ErrRefused):
			code = http.StatusUnprocessableEntity
			// Said once: the category is the status code.
			err = errors.New(strings.TrimPrefix(err.Error(), ErrRefused.Error()+": "))
		}
		log.Debug("api request failed", "err", err)
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
		return
	}
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debug("api write", "err", err)
	}
}

// Server serves the API on the data dir's socket.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
	// stop ends the requests that wait (on a job) when the server closes.
	stop context.CancelFunc
}

// ListenOption configures Listen.
type ListenOption func(*listenOptions)

type listenOptions struct{ group string }

// WithGroup lets the members of group use the socket: it is made group
// owned and 0660, and the data dir group owned and 0710 so that they can
// reach it (and nothing else in it: its files stay 0600). Empty: owner only.
func WithGroup(group string) ListenOption {
	return func(o *listenOptions) { o.group = group }
}

// Listen creates the socket (0600), replacing a stale one left by a crash,
// and starts serving. It fails if another daemon answers on it.
func Listen(dataDir string, b Backend, log *slog.Logger, opts ...ListenOption) (*Server, error) {
	var o listenOptions
	for _, opt := range opts {
		opt(&o)
	}
	path := SocketPath(dataDir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another blackbox daemon is running on %s", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := setSocketMode(dataDir, path, o.group); err != nil {
		ln.Close()
		return nil, err
	}
	base, stop := context.WithCancel(context.Background())
	s := &Server{srv: &http.Server{Handler: Handler(b, log), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}, ln: ln, path: path, stop: stop}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.stop()
	err := s.srv.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

// Client talks to the daemon of a data dir.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the daemon of dataDir.
func NewClient(dataDir string) *Client {
	path := SocketPath(dataDir)
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Status asks for the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Offer asks for the daemon's current offer.
func (c *Client) Offer(ctx context.Context) (Offer, error) {
	var o Offer
	return o, c.do(ctx, http.MethodGet, "/v1/offer", nil, &o)
}

// Market asks the daemon to search the network.
func (c *Client) Market(ctx context.Context, req MarketRequest) ([]Offer, error) {
	var out []Offer
	return out, c.do(ctx, http.MethodPost, "/v1/market", req, &out)
}

// Submit starts a job.
func (c *Client) Submit(ctx context.Context, req contract.Request) (string, error) {
	var r IDResponse
	return r.ID, c.do(ctx, http.MethodPost, "/v1/jobs", req, &r)
}

// Jobs lists the buyer's jobs.
func (c *Client) Jobs(ctx context.Context) ([]*contract.JobStatus, error) {
	var out []*contract.JobStatus
	return out, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &out)
}

// Job shows one job.
func (c *Client) Job(ctx context.Context, id string) (*contract.JobStatus, error) {
	var out contract.JobStatus
	return &out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &out)
}

// WaitJob shows one job once it changed after since (its Updated as the
// caller last saw it) or ended, or after wait (then as it is): a daemon
// without waiting answers at once.
func (c *Client) WaitJob(ctx context.Context, id string, since time.Time, wait time.Duration) (*contract.JobStatus, error) {
	q := url.Values{"wait": {wait.String()}, "since": {since.Format(time.RFC3339Nano)}}
	var out contract.JobStatus
	return &out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"?"+q.Encode(), nil, &out)
}

// Cancel stops a job.
func (c *Client) Cancel(ctx context.Context, id string) error {
	var r IDResponse
	return c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, &r)
}

// Contracts is the seller's view.
func (c *Client) Contracts(ctx context.Context) (Contracts, error) {
	var out Contracts
	return out, c.do(ctx, http.MethodGet, "/v1/contracts", nil, &out)
}

// Channels lists payment channels.
func (c *Client) Channels(ctx context.Context) ([]*payment.Channel, error) {
	var out []*payment.Channel
	return out, c.do(ctx, http.MethodGet, "/v1/channels", nil, &out)
}

// CloseChannel closes a channel and returns the closing transaction's ID.
func (c *Client) CloseChannel(ctx context.Context, id string) (string, error) {
	var r IDResponse
	return r.ID, c.do(ctx, http.MethodPost, "/v1/channels/"+url.PathEscape(id)+"/close", nil, &r)
}

// WalletAddress returns a fresh receive address of the daemon's wallet.
func (c *Client) WalletAddress(ctx context.Context) (string, error) {
	var r IDResponse
	return r.ID, c.do(ctx, http.MethodGet, "/v1/wallet/address", nil, &r)
}

// WalletBalance returns the daemon's wallet balance.
func (c *Client) WalletBalance(ctx context.Context, minConf int32) (Balance, error) {
	var b Balance
	return b, c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/wallet/balance?minconf=%d", minConf), nil, &b)
}

// Scores is the daemon's view of every known peer.
func (c *Client) Scores(ctx context.Context) ([]reputation.Score, error) {
	var in []ScoreJSON
	if err := c.do(ctx, http.MethodGet, "/v1/reputation", nil, &in); err != nil {
		return nil, err
	}
	out := make([]reputation.Score, 0, len(in))
	for _, s := range in {
		sc, err := s.ToScore()
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Score is the daemon's view of one peer.
func (c *Client) Score(ctx context.Context, p peer.ID) (reputation.Score, error) {
	var in ScoreJSON
	if err := c.do(ctx, http.MethodGet, "/v1/reputation/"+p.String(), nil, &in); err != nil {
		return reputation.Score{}, err
	}
	return in.ToScore()
}

// Forget drops the daemon's own observations of p (and any block they
// caused) and returns p's score after.
func (c *Client) Forget(ctx context.Context, p peer.ID) (reputation.Score, error) {
	var in ScoreJSON
	if err := c.do(ctx, http.MethodDelete, "/v1/reputation/"+p.String(), nil, &in); err != nil {
		return reputation.Score{}, err
	}
	return in.ToScore()
}

// ScoreJSON is a reputation.Score as the API sends it. A source's "from"
// is empty (or "self") for this node's own observations, which a peer.ID
// does not decode: it is read as text and converted.
type ScoreJSON struct {
	reputation.Score
	Sources []SourceJSON `json:"sources,omitempty"`
}

// SourceJSON is a reputation.Source with its attester as text.
type SourceJSON struct {
	reputation.Source
	From string `json:"from"`
}

// ToScore converts s back, with reputation.Self for this node's own source.
func (s ScoreJSON) ToScore() (reputation.Score, error) {
	out := s.Score
	out.Sources = nil
	for _, src := range s.Sources {
		v := src.Source
		v.From = reputation.Self
		if src.From != "" && src.From != "self" {
			id, err := peer.Decode(src.From)
			if err != nil {
				return reputation.Score{}, fmt.Errorf("score of %s: source %q: %w", s.Peer, src.From, err)
			}
			v.From = id
		}
		out.Sources = append(out.Sources, v)
	}
	return out, nil
}

// Trust lists the daemon's explicit trust edges.
func (c *Client) Trust(ctx context.Context) ([]TrustEdge, error) {
	var out []TrustEdge
	return out, c.do(ctx, http.MethodGet, "/v1/trust", nil, &out)
}

// SetTrust sets the daemon's trust in p (0 removes it).
func (c *Client) SetTrust(ctx context.Context, p peer.ID, weight float64) error {
	var r IDResponse
	return c.do(ctx, http.MethodPut, "/v1/trust/"+p.String(), TrustRequest{Weight: weight}, &r)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://blackbox"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w (socket %s): start it with `blackbox serve`", ErrNoDaemon, c.path)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb)
		return statusError(resp.StatusCode, eb.Error)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

// statusError turns an error reply back into the category the server
// replied with, so that callers can branch with errors.Is as they would on
// the server side.
func statusError(code int, msg string) error {
	var category error
	switch code {
	case http.StatusNotFound:
		category = ErrNotFound
	case http.StatusServiceUnavailable:
		category = ErrUnavailable
	case http.StatusBadRequest:
		category = ErrBadRequest
	case http.StatusUnprocessableEntity:
		return refused{msg}
	default:
		return fmt.Errorf("daemon: %s", msg)
	}
	// The server's text usually starts with the category already.
	msg = strings.TrimPrefix(msg, category.Error()+": ")
	return fmt.Errorf("%w: %s", category, msg)
}

// setSocketMode gives the socket to its owner only, or also to group.
func setSocketMode(dataDir, path, group string) error {
	if group == "" {
		return os.Chmod(path, 0o600)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("socket_group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("socket_group %s: gid %q: %w", group, g.Gid, err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{dataDir, 0o710}, {path, 0o660}} {
		if err := os.Chown(f.path, -1, gid); err != nil {
			return fmt.Errorf("socket_group %s: %w", group, err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			return fmt.Errorf("socket_group %s: %w", group, err)
		}
	}
	return nil
}
