package reputation

import (
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Self is the root of the trust graph: edges from Self are this node's own,
// explicit trust (blackbox trust add). It is the empty peer ID so that the
// graph works before the node's identity is known (the CLI, tests).
const Self peer.ID = ""

// Edge is one directed trust edge. Weight is in (0, 1].
type Edge struct {
	From    peer.ID
	To      peer.ID
	Weight  float64
	Updated time.Time
}

// maxEdgesPerTruster bounds what one remote peer's trust statements can make
// this node remember.
const maxEdgesPerTruster = 256

// graph holds explicit edges (from Self) and edges learned from signed trust
// statements. It is not safe for concurrent use; Book guards it.
type graph struct {
	out     map[peer.ID]map[peer.ID]Edge
	version uint64
}

func newGraph() *graph { return &graph{out: map[peer.ID]map[peer.ID]Edge{}} }

// set adds, replaces or (weight 0) removes an edge. It reports false when a
// newer edge is already known or the truster has too many edges.
func (g *graph) set(e Edge) bool {
	m := g.out[e.From]
	if old, ok := m[e.To]; ok && e.From != Self && old.Updated.After(e.Updated) {
		return false
	}
	if e.Weight <= 0 {
		if _, ok := m[e.To]; ok {
			delete(m, e.To)
			g.version++
		}
		return true
	}
	if m == nil {
		m = map[peer.ID]Edge{}
		g.out[e.From] = m
	}
	if _, ok := m[e.To]; !ok && e.From != Self && len(m) >= maxEdgesPerTruster {
		return false
	}
	m[e.To] = e
	g.version++
	return true
}

// edges lists the edges from one peer, sorted by target.
func (g *graph) edges(from peer.ID) []Edge {
	var es []Edge
	for _, e := range g.out[from] {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].To < es[j].To })
	return es
}

// propagate computes this node's trust in every reachable peer: the best
// product of edge weights along a path of at most maxHops edges from Self.
// self (this node's own ID, if known) is treated as Self.
func (g *graph) propagate(self peer.ID, maxHops int) map[peer.ID]float64 {
	best := map[peer.ID]float64{}
	frontier := map[peer.ID]float64{Self: 1}
	for h := 0; h < maxHops && len(frontier) > 0; h++ {
		next := map[peer.ID]float64{}
		for u, t := range frontier {
			for v, e := range g.out[u] {
				if v == Self || v == self {
					continue
				}
				c := t * e.Weight
				if c > best[v] {
					best[v] = c
					next[v] = c
				}
			}
		}
		frontier = next
	}
	return best
}
