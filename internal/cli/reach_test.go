package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
)

// TestReachString: status's reachability line tells addresses peers only
// observed (behind NAT) from ones known to reach the node.
func TestReachString(t *testing.T) {
	priv := api.Reachability{State: "private", Relays: []string{"12D3R"}, PublicAddrs: []string{"/ip4/5.6.7.8/udp/7460/quic-v1"},
		PublicAddrsFrom: "observed", NAT: api.NATTypes{TCP: "unknown", UDP: "endpoint_independent"}, HolePunching: "possible"}
	got := reachString(priv)
	for _, want := range []string{"through relay 12D3R", "peers see it at /ip4/5.6.7.8/udp/7460/quic-v1 (observed, not confirmed reachable)", "udp endpoint_independent", "hole punching possible"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	pub := api.Reachability{State: "public", PublicAddrs: []string{"/ip4/1.2.3.4/tcp/7460"}, PublicAddrsFrom: "confirmed"}
	if got := reachString(pub); got != "public: peers dial it directly at /ip4/1.2.3.4/tcp/7460" {
		t.Errorf("public: %q", got)
	}
}

// TestUnreachableString: status's line on unreachable sellers says how many
// and until when the first is ranked last, and is absent when none is.
func TestUnreachableString(t *testing.T) {
	if got := unreachableString(nil); got != "" {
		t.Errorf("none: %q", got)
	}
	until := time.Date(2026, 12, 1, 12, 10, 0, 0, time.Local)
	got := unreachableString([]api.UnreachableSeller{{Peer: "12D3A", Until: until}, {Peer: "12D3B", Until: until.Add(time.Minute)}})
	if want := "2 ranked last, the first until 12:10:00"; !strings.HasPrefix(got, want) {
		t.Errorf("%q, want it to start with %q", got, want)
	}
}
