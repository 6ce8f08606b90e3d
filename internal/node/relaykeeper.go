package node

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
)

// relayKeeper holds circuit relay v2 slots while the node is not publicly
// reachable: on the configured relays first, then on peers that offer the
// relay service (found connected or in the DHT's routing table). It renews
// each slot at half its life and publishes the /p2p-circuit addresses on
// the event bus (EvtAutoRelayAddrsUpdated), from which the host adds them to
// its addresses, and so to the offers it signs.
//
// It does what go-libp2p's autorelay does, for one reason: autorelay
// advertises only a relay's globally routable addresses, so a relay on a
// LAN, on loopback (the tests) or in a lab's documentation ranges never
// yields a circuit address. Here the relay's own answer (its reservation's
// addresses) comes first, else the addresses the node dialled it at.
type relayKeeper struct {
	h      host.Host
	static []peer.AddrInfo
	// want is how many slots to hold.
	want int
	emit event.Emitter
	log  *slog.Logger

	mu sync.Mutex
	// found lists relay candidates beyond the static ones.
	found   func() []peer.ID
	active  bool
	held    map[peer.ID]held
	backoff map[peer.ID]time.Time
	wake    chan struct{}
}

type held struct {
	rsvp  *client.Reservation
	renew time.Time
	addrs []ma.Multiaddr
}

// relayRetry is how long a relay that refused or failed waits before the
// next try.
const relayRetry = time.Minute

func newRelayKeeper(h host.Host, static []peer.AddrInfo, found func() []peer.ID, log *slog.Logger) (*relayKeeper, error) {
	emit, err := h.EventBus().Emitter(new(event.EvtAutoRelayAddrsUpdated), eventbus.Stateful)
	if err != nil {
		return nil, err
	}
	return &relayKeeper{h: h, static: static, found: found, want: 2, emit: emit, log: log,
		held: map[peer.ID]held{}, backoff: map[peer.ID]time.Time{}, wake: make(chan struct{}, 1)}, nil
}

// setActive turns reservations on (the node is not public) or off (it
// is: the slots are let go and the circuit addresses withdrawn).
func (k *relayKeeper) setActive(on bool) {
	k.mu.Lock()
	changed := k.active != on
	k.active = on
	k.mu.Unlock()
	if changed {
		select {
		case k.wake <- struct{}{}:
		default:
		}
	}
}

// setFinder sets where relay candidates beyond the static ones come from
// (the DHT starts after the keeper).
func (k *relayKeeper) setFinder(found func() []peer.ID) {
	k.mu.Lock()
	k.found = found
	k.mu.Unlock()
}

// relays are the relays holding a slot for the node, sorted.
func (k *relayKeeper) relays() []peer.ID {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]peer.ID, 0, len(k.held))
	for p := range k.held {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (k *relayKeeper) run(ctx context.Context) {
	defer k.emit.Close()
	// A relay that goes away takes its slot with it: look again at once.
	sub, err := k.h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.Name("blackbox relay slots"))
	if err == nil {
		defer sub.Close()
		go func() {
			for ev := range sub.Out() {
				e := ev.(event.EvtPeerConnectednessChanged)
				k.mu.Lock()
				_, held := k.held[e.Peer]
				k.mu.Unlock()
				if held && e.Connectedness != network.Connected {
					select {
					case k.wake <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	for {
		k.step(ctx)
		wait := 30 * time.Second
		k.mu.Lock()
		if k.active && len(k.held) < k.want {
			wait = 5 * time.Second
		}
		k.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-k.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// step drops lost slots, renews old ones and reserves new ones until
// want are held, then publishes the circuit addresses if they changed.
func (k *relayKeeper) step(ctx context.Context) {
	k.mu.Lock()
	active := k.active
	before := k.addrsLocked()
	now := time.Now()
	for p, hd := range k.held {
		// A slot lives as long as the connection to the relay.
		if !active || k.h.Network().Connectedness(p) != network.Connected || now.After(hd.rsvp.Expiration) {
			delete(k.held, p)
			k.h.ConnManager().Unprotect(p, "relay-slot")
		}
	}
	var renew []peer.ID
	for p, hd := range k.held {
		if now.After(hd.renew) {
			renew = append(renew, p)
		}
	}
	need := k.want - len(k.held)
	k.mu.Unlock()

	for _, p := range renew {
		k.reserve(ctx, peer.AddrInfo{ID: p})
	}
	if active && need > 0 {
		for _, c := range k.candidates(now) {
			if need == 0 {
				break
			}
			if k.reserve(ctx, c) {
				need--
			}
		}
	}
	k.mu.Lock()
	after := k.addrsLocked()
	k.mu.Unlock()
	if !slices.EqualFunc(before, after, ma.Multiaddr.Equal) {
		k.log.Info("relay addresses", "addrs", after)
		if err := k.emit.Emit(event.EvtAutoRelayAddrsUpdated{RelayAddrs: after}); err != nil {
			k.log.Warn("publish relay addresses", "err", err)
		}
	}
}

// candidates are relays to try now: the static ones, then the found ones
// that offer the relay service, none held or backing off.
func (k *relayKeeper) candidates(now time.Time) []peer.AddrInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	skip := func(p peer.ID) bool {
		_, h := k.held[p]
		return h || p == k.h.ID() || now.Before(k.backoff[p])
	}
	var out []peer.AddrInfo
	for _, s := range k.static {
		if !skip(s.ID) {
			out = append(out, s)
		}
	}
	if k.found != nil {
		for _, p := range k.found() {
			if skip(p) || slices.ContainsFunc(out, func(a peer.AddrInfo) bool { return a.ID == p }) {
				continue
			}
			if ok, _ := k.h.Peerstore().SupportsProtocols(p, proto.ProtoIDv2Hop); len(ok) > 0 {
				out = append(out, peer.AddrInfo{ID: p})
			}
		}
	}
	return out
}

// reserve asks relay ai for a slot (new or renewed) and records it.
func (k *relayKeeper) reserve(ctx context.Context, ai peer.AddrInfo) bool {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if len(ai.Addrs) > 0 {
		if err := k.h.Connect(rctx, ai); err != nil {
			k.fail(ai.ID, err)
			return false
		}
	}
	rsvp, err := client.Reserve(rctx, k.h, ai)
	if err != nil {
		k.fail(ai.ID, err)
		return false
	}
	addrs := rsvp.Addrs
	if len(addrs) == 0 {
		addrs = k.h.Peerstore().Addrs(ai.ID)
	}
	circuit := ma.StringCast("/p2p/" + ai.ID.String() + "/p2p-circuit")
	var caddrs []ma.Multiaddr
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue // a relay's own relayed address: no relay chains
		}
		if id, err := peer.IDFromP2PAddr(a); err == nil && id == ai.ID {
			a, _ = ma.SplitLast(a)
		}
		caddrs = append(caddrs, a.Encapsulate(circuit))
	}
	now := time.Now()
	k.mu.Lock()
	_, renewed := k.held[ai.ID]
	k.held[ai.ID] = held{rsvp: rsvp, renew: now.Add(rsvp.Expiration.Sub(now) / 2), addrs: caddrs}
	delete(k.backoff, ai.ID)
	k.mu.Unlock()
	k.h.ConnManager().Protect(ai.ID, "relay-slot")
	if !renewed {
		k.log.Info("relay slot reserved", "relay", ai.ID, "expires", rsvp.Expiration,
			"limit_duration", rsvp.LimitDuration, "limit_data", rsvp.LimitData)
	}
	return true
}

func (k *relayKeeper) fail(p peer.ID, err error) {
	k.mu.Lock()
	k.backoff[p] = time.Now().Add(relayRetry)
	_, was := k.held[p]
	delete(k.held, p)
	k.mu.Unlock()
	if was {
		k.h.ConnManager().Unprotect(p, "relay-slot")
	}
	k.log.Debug("relay slot refused", "relay", p, "err", err)
}

// addrsLocked are the circuit addresses of the slots held, sorted.
func (k *relayKeeper) addrsLocked() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, hd := range k.held {
		out = append(out, hd.addrs...)
	}
	slices.SortFunc(out, ma.Multiaddr.Compare)
	return out
}
