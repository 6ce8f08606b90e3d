package offer

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// The walk to a holder of a bucket's provider records.
const (
	// holderStart is how many of its routing table's peers closest to the
	// bucket's key the walk starts from.
	holderStart = 4
	// holderAsks bounds the peers asked (each a round trip: a holder is
	// usually the first or the second).
	holderAsks = 5
	// holderTimeout bounds one ask: a peer that does not answer in time is
	// passed over for the next closest.
	holderTimeout = time.Second
)

// fromHolders walks to a holder of the provider records of the bucket
// whose DHT key is key, over BucketProtocolID: it asks the closest peer it
// knows, which answers with the offers it holds or with the peers it knows
// closer, and so on, one peer at a time. It returns the verified offers of
// the first answer that has any (asked for ask of them), up to want matching f; none if the walk
// found no holder (no peer on the way has the protocol: older nodes) or the
// holder's offers were all refused. Every envelope is opened (signature,
// validity) and checked against the sequence seen from its seller, as a
// fetched one is; several are opened at once.
func (d *Discoverer) fromHolders(ctx context.Context, key []byte, f Filter, ask, want int) []*Offer {
	target := kb.ConvertKey(string(key))
	h := d.cfg.Host
	asked := map[peer.ID]bool{h.ID(): true}
	var cands []peer.ID
	add := func(ps []peer.ID) {
		for _, p := range ps {
			if !asked[p] && !slices.Contains(cands, p) {
				cands = append(cands, p)
			}
		}
		cands = kb.SortClosestPeers(cands, target)
	}
	add(d.cfg.Closest(key, holderStart))
	for range holderAsks {
		if len(cands) == 0 || ctx.Err() != nil {
			return nil
		}
		p := cands[0]
		cands = cands[1:]
		asked[p] = true
		actx, cancel := context.WithTimeout(ctx, holderTimeout)
		reply, err := AskBucket(actx, h, p, key, ask)
		cancel()
		if err != nil {
			d.cfg.Log.Debug("bucket holder walk: ask failed", "peer", p, "err", err)
			continue
		}
		if len(reply.Offers) > 0 {
			return d.openAll(ctx, p, reply.Offers, f, want)
		}
		var closer []peer.ID
		ps := h.Peerstore()
		for _, ai := range reply.Closer {
			if len(ai.Addrs) > 0 && h.Network().Connectedness(ai.ID) != network.Connected {
				ps.AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
			}
			closer = append(closer, ai.ID)
		}
		add(closer)
	}
	return nil
}

// openAll opens the envelopes holder served until count of them match f,
// in rounds of as many as are still wanted: each round's envelopes not
// already cached are split over the cores, and each part's signatures are
// checked in one batch (openBatch). A refused envelope is reported as the
// holder's.
func (d *Discoverer) openAll(ctx context.Context, holder peer.ID, envs [][]byte, f Filter, count int) []*Offer {
	var out []*Offer
	for len(envs) > 0 && len(out) < count && ctx.Err() == nil {
		round := envs[:min(len(envs), count-len(out))]
		envs = envs[len(round):]
		opened := make([]*Offer, len(round))
		var fresh []int // the round's envelopes not in the cache
		for i, env := range round {
			if opened[i] = d.cachedEnv(env); opened[i] == nil {
				fresh = append(fresh, i)
			}
		}
		parts := min(runtime.GOMAXPROCS(0), (len(fresh)+batchMin-1)/batchMin)
		var wg sync.WaitGroup
		for p := range parts {
			part := fresh[p*len(fresh)/parts : (p+1)*len(fresh)/parts]
			wg.Go(func() {
				batch := make([][]byte, len(part))
				for j, i := range part {
					batch[j] = round[i]
				}
				offers, errs := openBatch(batch, d.cfg.Now())
				for j, i := range part {
					err := errs[j]
					if err == nil {
						err = d.accept(offers[j], round[i])
					}
					if err != nil {
						d.cfg.Log.Debug("offer from bucket holder rejected", "holder", holder, "err", err)
						if d.cfg.OnReject != nil {
							d.cfg.OnReject(holder, err)
						}
						continue
					}
					opened[i] = offers[j]
				}
			})
		}
		wg.Wait()
		for _, o := range opened {
			if o != nil && f.Match(o) && len(out) < count {
				out = append(out, o)
			}
		}
	}
	return out
}

// batchMin is the fewest envelopes worth a core of their own: a batch
// check saves more the more signatures it holds.
const batchMin = 4
