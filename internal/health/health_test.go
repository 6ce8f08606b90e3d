package health

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
	ma "github.com/multiformats/go-multiaddr"
)

func TestReport(t *testing.T) {
	r := NewReport([]Check{{Name: "a", Status: OK}, {Name: "b", Status: Warn}})
	if !r.CanEarn || r.Summary() != "yes" {
		t.Errorf("warnings only: %+v %q", r, r.Summary())
	}
	r = NewReport([]Check{{Name: "payments", Status: Fail, Detail: "btcd down"}, {Name: "disk", Status: Fail, Detail: "full"}})
	if r.CanEarn || r.Summary() != "no: payments: btcd down; disk: full" {
		t.Errorf("failures: %q", r.Summary())
	}
	if NewReport(nil).Checks == nil {
		t.Error("no checks: want an empty list, not null, in JSON")
	}
}

type fakeChain struct {
	info payment.ChainInfo
	err  error
}

func (f fakeChain) Info(context.Context) (payment.ChainInfo, error) { return f.info, f.err }

// A chain source that is not configured, not listening, refusing the
// credentials or on another network fails "payments" with a fix.
func TestChainFailures(t *testing.T) {
	now := time.Now()
	cfg := payment.RegtestConfig()
	got := Chain(context.Background(), cfg, nil, now)
	if got[0].Name != NamePayments || got[0].Status != Fail || !strings.Contains(got[0].Detail, "not configured") || got[0].Fix == "" {
		t.Errorf("unconfigured: %+v", got)
	}
	if got[len(got)-1].Name != NameClock || got[len(got)-1].Status != Warn {
		t.Errorf("no source: the clock is a warning, got %+v", got)
	}
	cfg.RPCUser, cfg.RPCPass = "u", "p"
	cfg.RPCHost = "127.0.0.1:1" // nothing listens on port 1
	got = Chain(context.Background(), cfg, fakeChain{}, now)
	if got[0].Status != Fail || !strings.Contains(got[0].Detail, "not reachable") || !strings.Contains(got[0].Fix, "start btcd") {
		t.Errorf("nothing listening: %+v", got[0])
	}

	info := payment.ChainInfo{Network: "regtest", Height: 200, TipTime: now}
	cfg.Network = "testnet"
	c := ChainNetwork(cfg, info)
	if c.Status != Fail || !strings.Contains(c.Detail, "follows regtest, but payment.network is testnet") {
		t.Errorf("wrong network: %+v", c)
	}
	cfg.Network = "testnet3"
	info.Network = "testnet"
	if c := ChainNetwork(cfg, info); c.Status != OK {
		t.Errorf("testnet3 is testnet: %+v", c)
	}
}

func TestSyncAndClock(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		network string
		tipAge  time.Duration
		want    Status
	}{
		{"mainnet", 5 * time.Minute, OK},
		{"mainnet", 3 * time.Hour, Warn},
		{"mainnet", 40 * 24 * time.Hour, Fail},
		{"regtest", 400 * 24 * time.Hour, OK}, // nothing to catch up with
	} {
		c := Sync(tc.network, payment.ChainInfo{Height: 7, TipTime: now.Add(-tc.tipAge)}, now)
		if c.Status != tc.want {
			t.Errorf("%s, tip %s old: %s (%s), want %s", tc.network, tc.tipAge, c.Status, c.Detail, tc.want)
		}
	}
	for _, tc := range []struct {
		info payment.ChainInfo
		want Status
	}{
		{payment.ChainInfo{TipTime: now}, OK},
		{payment.ChainInfo{TipTime: now.Add(3 * time.Hour)}, Fail}, // our clock is behind
		{payment.ChainInfo{TipTime: now, Peers: 8, HasTimeOffset: true, TimeOffset: 5 * time.Second}, OK},
		{payment.ChainInfo{TipTime: now, Peers: 8, HasTimeOffset: true, TimeOffset: -5 * time.Minute}, Warn},
		{payment.ChainInfo{TipTime: now, Peers: 8, HasTimeOffset: true, TimeOffset: time.Hour}, Fail},
	} {
		if c := Clock("mainnet", tc.info, now); c.Status != tc.want || (c.Status != OK && c.Fix == "") {
			t.Errorf("%+v: %+v, want %s with a fix", tc.info, c, tc.want)
		}
	}
	// Regtest blocks mined fast run ahead of the clock: not a fault.
	if c := Clock("regtest", payment.ChainInfo{TipTime: now.Add(5 * time.Hour)}, now); c.Status != OK {
		t.Errorf("regtest tip ahead: %+v", c)
	}
}

func TestWithWallet(t *testing.T) {
	w := Check{Name: NameWallet}
	got := WithWallet([]Check{{Name: NamePayments}, {Name: NameSync}, {Name: NameClock}}, w)
	var names []string
	for _, c := range got {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "payments,chain sync,wallet,clock" {
		t.Errorf("order: %v", names)
	}
}

// The wallet check says which passphrase does not open which wallet.
func TestWalletOffline(t *testing.T) {
	ctx := context.Background()
	cfg := payment.RegtestConfig()
	dir := t.TempDir()
	pass := Passphrase{Value: []byte("right"), Source: "BLACKBOX_WALLET_PASSPHRASE"}
	if c := Wallet(ctx, cfg, dir, Passphrase{Err: errors.New("no wallet passphrase")}, nil); c.Status != Fail || c.Fix == "" {
		t.Errorf("no passphrase: %+v", c)
	}
	if c := Wallet(ctx, cfg, dir, pass, nil); c.Status != Warn || !strings.Contains(c.Detail, "no wallet") {
		t.Errorf("no wallet yet: %+v", c)
	}
	// A seed box that no passphrase opens (a real one is tried in
	// cmd/blackbox's TestDoctorPayments).
	b, _ := json.Marshal(payment.SeedBackup{Version: 1, Network: "regtest", KDF: "scrypt", N: 1 << 10, R: 8, P: 1,
		Salt: make([]byte, 16), Nonce: make([]byte, 24), Box: make([]byte, 64)})
	if err := os.WriteFile(filepath.Join(dir, "seed.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	main := cfg
	main.Network = "mainnet"
	if c := Wallet(ctx, main, dir, pass, nil); c.Status != Fail || !strings.Contains(c.Detail, "is for regtest") {
		t.Errorf("wallet of another network: %+v", c)
	}
	if c := Wallet(ctx, cfg, dir, pass, nil); c.Status != Fail || !strings.Contains(c.Detail, "does not open with the passphrase from BLACKBOX_WALLET_PASSPHRASE") {
		t.Errorf("wrong passphrase: %+v", c)
	}
}
func TestDisk(t *testing.T) {
	const gib = 1 << 30
	if c := diskCheck("/d", 100*gib, 10*gib, 1<<62, gib/4); c.Status != OK || !strings.Contains(c.Detail, "90GiB of it offered") {
		t.Errorf("room: %+v", c)
	}
	if c := diskCheck("/d", 100*gib, 10*gib, 5*gib, gib/4); !strings.Contains(c.Detail, "5GiB of it offered") {
		t.Errorf("meter.max.disk caps the offer: %+v", c)
	}
	if c := diskCheck("/d", 10*gib, 10*gib, 1<<62, gib/4); c.Status != Fail || !strings.Contains(c.Fix, "meter.reserve.disk") {
		t.Errorf("all reserved: %+v", c)
	}
	if c := containerdDisk(gib/2, 8*gib); c.Status != Fail {
		t.Errorf("containerd root full: %+v", c)
	}
	if c := containerdDisk(4*gib, 8*gib); c.Status != Warn {
		t.Errorf("containerd root below one image: %+v", c)
	}
	if c := worst(Check{Name: NameDisk, Status: OK, Detail: "a"}, Check{Status: Warn, Detail: "b", Fix: "f"}); c.Status != Warn || c.Detail != "a; b" || c.Fix != "f" {
		t.Errorf("worst: %+v", c)
	}
}

func TestReachability(t *testing.T) {
	addrs := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	for _, tc := range []struct {
		addrs []ma.Multiaddr
		want  Status
		says  string
	}{
		{addrs("/ip4/127.0.0.1/tcp/7460", "/ip4/1.2.3.4/tcp/7460"), OK, "public address 1.2.3.4 (tcp 7460)"},
		{addrs("/ip4/192.168.1.5/tcp/7460", "/ip4/192.168.1.5/udp/7460/quic-v1"), Warn, "only private addresses 192.168.1.5 (tcp 7460, udp 7460)"},
		{addrs("/ip4/127.0.0.1/tcp/4001"), Warn, "loopback only (tcp 4001)"},
		{nil, Warn, "no IP listen address"},
	} {
		c := Reachability(tc.addrs)
		if c.Status != tc.want || !strings.Contains(c.Detail, tc.says) || !strings.Contains(c.Detail, "AutoNAT") {
			t.Errorf("%v: %+v, want %s saying %q", tc.addrs, c, tc.want, tc.says)
		}
	}
}

// TestReachabilityOf: each state a running node can be in gives its check,
// with a fix for every one that is not ok.
func TestReachabilityOf(t *testing.T) {
	listen := []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.5/tcp/7460"), ma.StringCast("/ip4/192.168.1.5/udp/7460/quic-v1")}
	relay := Reach{State: "private", Relays: []string{"12D3R"}, RelayAddrs: []string{"/ip4/1.2.3.4/tcp/7460/p2p/12D3R/p2p-circuit"}, PortMapping: "no_router"}
	for _, tc := range []struct {
		name string
		r    Reach
		want Status
		says []string
	}{
		{"public", Reach{State: "public", PublicAddrs: []string{"/ip4/1.2.3.4/tcp/7460"}}, OK, []string{"public", "1.2.3.4", "dialled it back"}},
		{"forced public", Reach{State: "public", Forced: true}, OK, []string{"forced by network.reachability"}},
		{"public, port mapped", Reach{State: "public", PortMapping: "mapped", MappedAddrs: []string{"/ip4/1.2.3.4/tcp/7460"}}, OK, []string{"router maps /ip4/1.2.3.4/tcp/7460", "UPnP"}},
		{"public, mapped by NAT-PMP", Reach{State: "public", PortMapping: "mapped", MappedAddrs: []string{"/ip4/1.2.3.4/tcp/7460"}, PortMappingProtocol: "natpmp"}, OK, []string{"router maps /ip4/1.2.3.4/tcp/7460 to it (NAT-PMP)"}},
		{"unreachable, mapped by UPnP behind CGNAT", Reach{State: "unreachable", PortMapping: "mapped", MappedAddrs: []string{"/ip4/100.64.1.2/tcp/7460"}, PortMappingProtocol: "upnp"}, Warn, []string{"to this node (UPnP) but"}},
		{"unreachable, port mapping off", Reach{State: "unreachable"}, Warn, []string{"set network.port_mapping: true"}},
		{"unreachable, mapped behind CGNAT", Reach{State: "unreachable", PortMapping: "mapped", MappedAddrs: []string{"/ip4/100.64.1.2/tcp/7460"}}, Warn, []string{"maps /ip4/100.64.1.2/tcp/7460", "carrier-grade"}},
		{"unreachable, router refused", Reach{State: "unreachable", PortMapping: "refused"}, Warn, []string{"mapped no port"}},
		{"relay, cone NAT", func() Reach { r := relay; r.HolePunching = "possible"; return r }(), Warn,
			[]string{"through relay 12D3R", "p2p-circuit", "hole punching should upgrade", "forward tcp 7460, udp 7460 on the router to 192.168.1.5", "no router answered"}},
		{"relay, symmetric NAT", func() Reach { r := relay; r.HolePunching = "unlikely"; return r }(), Warn, []string{"symmetric", "relay's limits"}},
		{"relay, NAT unknown", relay, Warn, []string{"not known yet"}},
		{"relay, seen by peers", func() Reach {
			r := relay
			r.PublicAddrs, r.PublicAddrsFrom = []string{"/ip4/5.6.7.8/udp/7460/quic-v1"}, "observed"
			return r
		}(), Warn, []string{"seen by peers at /ip4/5.6.7.8/udp/7460/quic-v1 (observed, not confirmed reachable)", "through relay 12D3R"}},
		{"unreachable on a LAN", Reach{State: "unreachable"}, Warn, []string{"no relay slot", "network.relays", "forward"}},
		{"unreachable on the internet", Reach{State: "unreachable", Internet: true}, Fail, []string{"no relay slot", "network.relays"}},
		{"no verdict", Reach{State: "unknown"}, Warn, []string{"no verdict", "only private addresses 192.168.1.5"}},
	} {
		c := ReachabilityOf(tc.r, listen)
		if c.Name != NameReach || c.Status != tc.want {
			t.Errorf("%s: %+v, want %s", tc.name, c, tc.want)
		}
		for _, s := range tc.says {
			if !strings.Contains(c.Detail+" fix: "+c.Fix, s) {
				t.Errorf("%s: %+v does not say %q", tc.name, c, s)
			}
		}
		if c.Status != OK && c.Fix == "" {
			t.Errorf("%s: no fix", tc.name)
		}
	}
}
