// Package dashboard is the node's web dashboard: one page (HTML, CSS and
// plain JavaScript embedded in the binary, charts drawn as SVG by its own
// code, nothing fetched from elsewhere) and the small JSON API it polls.
// It reads the node through Source and changes only the selling policy.
// Access: see guard (loopback free, the data dir's token from elsewhere).
package dashboard

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

//go:embed web
var web embed.FS

// Source is what the dashboard reads from the node, and the one thing it
// changes (the policy). The node implements it with its API backend.
type Source interface {
	Status(ctx context.Context) (api.Status, error)
	Offer(ctx context.Context) (api.Offer, error)
	Contracts(ctx context.Context) (api.Contracts, error)
	Channels(ctx context.Context) ([]*payment.Channel, error)
	WalletBalance(ctx context.Context, minConf int32) (api.Balance, error)
	Scores(ctx context.Context) ([]reputation.Score, error)
	Score(ctx context.Context, p peer.ID) (reputation.Score, error)
	// Earnings is the node's history since now-since, as `blackbox
	// earnings` shows it.
	Earnings(ctx context.Context, since time.Duration) (api.Earnings, error)
	// Health is whether the node can earn, check by check (reachability
	// among them), as doctor, status and /healthz say it.
	Health(ctx context.Context) (health.Report, error)
	api.ConfigBackend
}

// maxContracts is how many contracts the page lists, newest first.
const maxContracts = 50

// Handler serves the dashboard; token guards it (see guard).
func Handler(src Source, token string, logs *LogRing, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	static, _ := fs.Sub(web, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", noCache(http.FileServerFS(static)))
	mux.HandleFunc("GET /api/overview", func(w http.ResponseWriter, r *http.Request) {
		since := 24 * time.Hour
		if s := r.URL.Query().Get("since"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, errorReply{Error: "since: a duration like 24h or 168h"})
				return
			}
			since = d
		}
		writeJSON(w, http.StatusOK, overview(r.Context(), src, since))
	})
	mux.HandleFunc("GET /api/logs", func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		lines := []LogLine{}
		if logs != nil {
			lines = logs.After(after)
		}
		writeJSON(w, http.StatusOK, lines)
	})
	mux.HandleFunc("PUT /api/policy", func(w http.ResponseWriter, r *http.Request) {
		var p api.Policy
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			writeJSON(w, http.StatusBadRequest, errorReply{Error: "policy: " + err.Error()})
			return
		}
		v, err := src.SetPolicy(r.Context(), p)
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, api.ErrBadRequest) {
				code = http.StatusBadRequest
			}
			log.Info("dashboard: policy refused", "err", err)
			writeJSON(w, code, errorReply{Error: err.Error(), Fields: api.FieldErrors(err)})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	return guard{token: token, next: mux}
}

type errorReply struct {
	Error  string            `json:"error"`
	Fields map[string]string `json:"fields,omitempty"`
}

// Overview is everything the page shows but the log tail, in one reply.
type Overview struct {
	Now      time.Time      `json:"now"`
	Status   *api.Status    `json:"status,omitempty"`
	Health   *health.Report `json:"health,omitempty"`
	Offer    *api.Offer     `json:"offer,omitempty"`
	Own      *scoreView     `json:"own_reputation,omitempty"`
	Peers    []scoreView    `json:"peers"`
	Wallet   *api.Balance   `json:"wallet,omitempty"`
	Channels []channelView  `json:"channels"`
	// Contracts are the newest first; EarnedSats and Rejections are the
	// seller's totals by contract state and by refusal reason.
	Contracts  []contractView    `json:"contracts"`
	EarnedSats map[string]int64  `json:"earned_sats"`
	Rejections map[string]uint64 `json:"rejections"`
	// Earnings is the node's history over the chosen period.
	Earnings *api.Earnings   `json:"earnings,omitempty"`
	Config   *api.ConfigView `json:"config,omitempty"`
	// Errors says which parts could not be read, and why; Off which parts
	// the node does not run (payments off: no wallet, no channels).
	Errors map[string]string `json:"errors,omitempty"`
	Off    map[string]string `json:"off,omitempty"`
}

type contractView struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	Peer      string    `json:"peer"`
	State     string    `json:"state"`
	PaidSat   int64     `json:"paid_sat"`
	Intervals uint64    `json:"intervals"`
	MilliCPU  uint64    `json:"millicpu"`
	Memory    uint64    `json:"memory_bytes"`
	Started   time.Time `json:"started,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	Updated   time.Time `json:"updated"`
	Why       string    `json:"why,omitempty"`
}

type channelView struct {
	ID          string `json:"id"`
	Peer        string `json:"peer"`
	Role        string `json:"role"`
	State       string `json:"state"`
	CapacitySat int64  `json:"capacity_sat"`
	PaidSat     int64  `json:"paid_sat"`
	// CloseFeeSat is what closing costs (fixed when the channel opened);
	// AfterCloseSat what a close would leave the seller (0 when that is
	// dust: no close can be made).
	CloseFeeSat   int64  `json:"close_fee_sat"`
	AfterCloseSat int64  `json:"after_close_sat"`
	ExpiryHeight  uint32 `json:"expiry_height"`
}

type scoreView struct {
	Peer     string  `json:"peer"`
	Mean     float64 `json:"mean"`
	Low      float64 `json:"low"`
	High     float64 `json:"high"`
	Evidence float64 `json:"evidence"`
	Blocked  bool    `json:"blocked"`
	Why      string  `json:"why,omitempty"`
}

func viewScore(s reputation.Score) scoreView {
	return scoreView{Peer: s.Peer.String(), Mean: s.Mean, Low: s.Low, High: s.High, Evidence: s.Evidence, Blocked: s.Blocked, Why: s.Why}
}

// overview reads every part; a part that fails is named in Errors and the
// rest is still shown.
func overview(ctx context.Context, src Source, since time.Duration) Overview {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o := Overview{Now: time.Now(), Peers: []scoreView{}, Channels: []channelView{}, Contracts: []contractView{}, Errors: map[string]string{}, Off: map[string]string{}}
	fail := func(part string, err error) bool {
		switch {
		case err == nil:
			return false
		case errors.Is(err, api.ErrUnavailable):
			o.Off[part] = err.Error()
		default:
			o.Errors[part] = err.Error()
		}
		return true
	}
	if s, err := src.Status(ctx); !fail("status", err) {
		o.Status = &s
		if id, err := peer.Decode(s.PeerID); err == nil {
			if sc, err := src.Score(ctx, id); err == nil {
				v := viewScore(sc)
				o.Own = &v
			}
		}
	}
	if h, err := src.Health(ctx); !fail("health", err) {
		o.Health = &h
	}
	if of, err := src.Offer(ctx); err == nil {
		of.Envelope = nil
		o.Offer = &of
	} else if !errors.Is(err, api.ErrNotFound) {
		fail("offer", err)
	}
	if cs, err := src.Contracts(ctx); !fail("contracts", err) {
		o.EarnedSats, o.Rejections = cs.EarnedSats, cs.Rejections
		recs := slices.Clone(cs.Contracts)
		slices.SortFunc(recs, func(a, b *contract.Record) int { return cmp.Compare(b.Updated.UnixNano(), a.Updated.UnixNano()) })
		for _, r := range recs[:min(len(recs), maxContracts)] {
			v := contractView{ID: r.ID, Role: r.Role.String(), Peer: r.Peer.String(), State: r.State.String(), PaidSat: r.Paid,
				Intervals: r.Intervals, Started: r.Started, Ended: r.Ended, Updated: r.Updated, Why: r.Why}
			if r.Proposal != nil {
				v.MilliCPU, v.Memory = r.Proposal.Request.Resources.CPUMillis, r.Proposal.Request.Resources.MemoryBytes
			}
			o.Contracts = append(o.Contracts, v)
		}
	}
	if chs, err := src.Channels(ctx); !fail("channels", err) {
		for _, c := range chs {
			o.Channels = append(o.Channels, channelView{ID: c.ID, Peer: c.Peer, Role: c.Role.String(), State: c.State.String(),
				CapacitySat: c.Capacity, PaidSat: c.Paid, CloseFeeSat: c.CloseFee, AfterCloseSat: c.Payout(), ExpiryHeight: c.Expiry})
		}
	}
	if b, err := src.WalletBalance(ctx, 1); !fail("wallet", err) {
		o.Wallet = &b
	}
	if scores, err := src.Scores(ctx); !fail("reputation", err) {
		slices.SortFunc(scores, func(a, b reputation.Score) int { return cmp.Compare(b.Evidence, a.Evidence) })
		for _, s := range scores {
			o.Peers = append(o.Peers, viewScore(s))
		}
	}
	if e, err := src.Earnings(ctx, since); !fail("earnings", err) {
		o.Earnings = &e
	}
	if c, err := src.Config(ctx); !fail("config", err) {
		o.Config = &c
	}
	return o
}

func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
		w.Header().Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
