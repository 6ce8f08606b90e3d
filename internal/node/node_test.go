package node

import (
	"github.com/blackbox-market/blackbox/pkg/payment"

	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	cfg.Sandbox.Address = filepath.Join(cfg.DataDir, "no-containerd.sock")
	cfg.DashboardAddr = "127.0.0.1:0" // not the machine's 7461
	// Not the light client on mainnet: no Bitcoin network in unit tests.
	cfg.Payment = payment.RegtestConfig()
	return cfg
}

func TestIdentityIsCreatedOnceAndGuarded(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, IdentityFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %o", st.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(dir)
	if err != nil || !k1.Equals(k2) {
		t.Fatalf("identity changed on reload: %v", err)
	}
	os.Chmod(filepath.Join(dir, IdentityFile), 0o644)
	if _, err := LoadOrCreateIdentity(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	os.Chmod(filepath.Join(dir, IdentityFile), 0o600)
	os.WriteFile(filepath.Join(dir, IdentityFile), []byte("junk"), 0o600)
	if _, err := LoadOrCreateIdentity(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt key: %v", err)
	}
}

// TestFailedStartUnwindsEverything: when a late subsystem fails (here the
// metrics address is taken), everything started before it is stopped: the
// database lock is released and the API socket removed.
func TestFailedStartUnwindsEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.MetricsAddr = busy.Addr().String()
	n, err := New(cfg, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "metrics_addr") {
		t.Fatalf("start with a busy metrics address: %v", err)
	}
	db, err := store.Open(filepath.Join(cfg.DataDir, DBFile), 100*time.Millisecond)
	if err != nil {
		t.Fatalf("database still locked after a failed start: %v", err)
	}
	db.Close()
	if _, err := os.Stat(api.SocketPath(cfg.DataDir)); !os.IsNotExist(err) {
		t.Fatalf("API socket left behind: %v", err)
	}
}

func TestNodeServesStatusAndStops(t *testing.T) {
	cfg := testConfig(t)
	cfg.Meter.CPUBasis = "allocatable"
	cfg.Meter.Reserve.CPU = "0"
	n := startNode(t, cfg)
	c := api.NewClient(cfg.DataDir)
	ctx := context.Background()
	s, err := c.Status(ctx)
	if err != nil || s.PeerID != n.Host().ID().String() || len(s.Addrs) == 0 {
		t.Fatalf("status: %+v %v", s, err)
	}
	// A second daemon on the same data dir is refused.
	n2, _ := New(cfg, "test", nil)
	if err := n2.Start(ctx); err == nil {
		n2.Stop()
		t.Fatal("second daemon on the same data dir started")
	}
	// With no containerd and no btcd the node runs, offers nothing and
	// says why.
	if s.Selling || s.Buying || !strings.Contains(s.Reason, "no containerd socket") ||
		!strings.Contains(s.Reason, "payments not configured") || !strings.Contains(s.NotBuying, "payment.rpc_user") {
		t.Fatalf("status of a node without sandbox and payments: %+v", s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := c.Offer(ctx)
		if err == nil {
			if o.Seller != s.PeerID || o.Resources.CPUMillis != 0 {
				t.Fatalf("offer of a node that cannot sell: %+v", o)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no offer after 10s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The reputation book is served while the daemon holds the database.
	other := n.Host().ID() // any valid peer ID will do
	if err := c.SetTrust(ctx, other, 0.5); err == nil {
		t.Fatal("trusting oneself was accepted")
	}
	k2, _ := LoadOrCreateIdentity(t.TempDir())
	p2, _ := peer.IDFromPrivateKey(k2)
	if err := c.SetTrust(ctx, p2, 0.5); err != nil {
		t.Fatal(err)
	}
	if edges, err := c.Trust(ctx); err != nil || len(edges) != 1 || edges[0].Peer != p2.String() || edges[0].Weight != 0.5 {
		t.Fatalf("trust after set: %+v %v", edges, err)
	}
	if err := c.SetTrust(ctx, p2, 2); err == nil {
		t.Fatal("trust weight 2 accepted")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx); err == nil {
		t.Fatal("API still answers after stop")
	}
}

func TestMetricsAreServedWhenAsked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t)
	cfg.MetricsAddr = addr
	cfg.Meter.CPUBasis = "allocatable"
	n := startNode(t, cfg)
	defer n.Stop()
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if strings.Contains(body, `blackbox_capacity_memory_bytes{kind="spare"}`) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{`blackbox_capacity_cpu_cores{kind="spare"}`, "blackbox_offers_published_total", "blackbox_peers", "blackbox_offers_rejected_total", "libp2p_"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, p := range lintBlackbox(t, body) {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// startNode starts a node on cfg; the test stops it.
func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}
