//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
)

// reachStatus is status --json's addresses and reachability.
type reachStatus struct {
	Addrs        []string         `json:"addrs"`
	Reachability api.Reachability `json:"reachability"`
}

func reachOf(t testing.TB, bin string, p *proc) reachStatus {
	t.Helper()
	out, err := runCLI(t, bin, "status", "--json", "--data-dir", p.dir)
	if err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	var s reachStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	// The counts are there from the start, zero or not.
	if !strings.Contains(out, `"holepunch": {`) || !strings.Contains(out, `"attempts": `) {
		t.Fatalf("status --json lacks the hole punch counts:\n%s", out)
	}
	return s
}

// doctorReach runs doctor --json (it exits 1 when the node cannot earn:
// here there is no btcd) and returns its reachability check.
func doctorReach(t *testing.T, bin string, p *proc) (status, detail, fix string) {
	t.Helper()
	cmd := exec.Command(bin, "doctor", "--json", "--data-dir", p.dir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Run()
	var rep struct {
		Checks []struct{ Name, Status, Detail, Fix string } `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out.String())
	}
	for _, c := range rep.Checks {
		if c.Name == "reachability" {
			return c.Status, c.Detail, c.Fix
		}
	}
	t.Fatalf("doctor has no reachability check: %s", out.String())
	return
}

// TestPrivateNodeBehindRelay: real processes. A node forced public runs
// the relay service; a node forced private with that relay in
// network.relays holds a slot on it and says so everywhere an operator
// looks: status --json (state private, the relay and its circuit
// address, also among the node's addresses), status's text, doctor's
// reachability check (with what to do for direct connections), and the
// reachability metric. A node forced private with no relay is
// unreachable, and doctor says how to fix it.
func TestPrivateNodeBehindRelay(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("real processes: not in -short")
	}
	bin := binary(t)
	env := []string{"BLACKBOX_MDNS=false"}
	relay := serve(t, bin, append(env, "BLACKBOX_NETWORK_REACHABILITY=public"))
	rs := waitStatus(t, bin, relay)
	var relayAddr string
	for _, a := range rs.Addrs {
		if strings.Contains(a, "/tcp/") {
			relayAddr = a
		}
	}
	waitFor(t, 60*time.Second, "the relay service on the public node", func() bool {
		r := reachOf(t, bin, relay).Reachability
		return r.State == "public" && r.RelayService && r.DHTMode == "server"
	})

	priv := serve(t, bin, append(env, "BLACKBOX_NETWORK_REACHABILITY=private", "BLACKBOX_NETWORK_RELAYS="+relayAddr),
		"--metrics-addr", "127.0.0.1:0")
	waitStatus(t, bin, priv)
	var s reachStatus
	waitFor(t, 90*time.Second, "a relay slot on the public node", func() bool {
		s = reachOf(t, bin, priv)
		return s.Reachability.State == "private"
	})
	r := s.Reachability
	if r.Source != "config" || !slices.Equal(r.Relays, []string{rs.PeerID}) || len(r.RelayAddrs) == 0 ||
		r.DHTMode != "client" || r.RelayService || r.PortMapping == "off" {
		t.Fatalf("private node's reachability: %+v", r)
	}
	for _, a := range r.RelayAddrs {
		if !strings.Contains(a, "/p2p/"+rs.PeerID+"/p2p-circuit") {
			t.Fatalf("relay address %s is not through %s", a, rs.PeerID)
		}
	}
	if !slices.ContainsFunc(s.Addrs, func(a string) bool { return strings.Contains(a, "/p2p-circuit/p2p/") }) {
		t.Fatalf("the node's addresses lack the circuit address: %v", s.Addrs)
	}
	text, err := runCLI(t, bin, "status", "--data-dir", priv.dir)
	if err != nil || !strings.Contains(text, "private (behind NAT): reachable through relay "+rs.PeerID) || !strings.Contains(text, "DHT client") {
		t.Fatalf("status text: %v\n%s", err, text)
	}
	st, detail, fix := doctorReach(t, bin, priv)
	if st != "warn" || !strings.Contains(detail, "through relay "+rs.PeerID) || !strings.Contains(fix, "forward tcp") {
		t.Fatalf("doctor's reachability check: %s %q fix %q", st, detail, fix)
	}
	resp, err := http.Get("http://" + metricsAddr(t, bin, priv) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`blackbox_reachability{reachability="private"} 1`, "blackbox_relay_slots 1", "blackbox_holepunch_attempts_total 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The relay's own view: public, with the checks saying so.
	if st, detail, _ := doctorReach(t, bin, relay); st != "ok" || !strings.Contains(detail, "public") {
		t.Errorf("relay's doctor: %s %q", st, detail)
	}

	// No relay at all: unreachable, and doctor says what to do.
	alone := serve(t, bin, append(env, "BLACKBOX_NETWORK_REACHABILITY=private"))
	waitStatus(t, bin, alone)
	waitFor(t, 30*time.Second, "the verdict", func() bool { return reachOf(t, bin, alone).Reachability.State == "unreachable" })
	st, detail, fix = doctorReach(t, bin, alone)
	if st != "warn" || !strings.Contains(detail, "unreachable") || !strings.Contains(fix, "network.relays") || !strings.Contains(fix, "UPnP") {
		t.Fatalf("doctor on an unreachable node: %s %q fix %q", st, detail, fix)
	}
}

// BenchmarkIdleReach: what reachability costs an idle node. Three
// unconfigured nodes (no btcd, no containerd) on loopback: one with the
// network defaults (auto: no verdict, no relay), a public relay (forced
// public, relay service on) holding BLACKBOX_BENCH_RELAY_PEERS (20) slots
// for in-process hosts that reserved one, and a node forced private
// holding a slot on that relay. After BLACKBOX_BENCH_SETTLE (10s), CPU
// over BLACKBOX_BENCH_IDLE (60s) as a share of one core (utime+stime from
// /proc), RSS (VmRSS) at its end. Goals of issue 10: < 1% of a core and
// < 80 MiB.
func BenchmarkIdleReach(b *testing.B) {
	bin := binary(b)
	idle := benchEnvDuration(b, "BLACKBOX_BENCH_IDLE", time.Minute)
	settle := benchEnvDuration(b, "BLACKBOX_BENCH_SETTLE", 10*time.Second)
	peers := benchEnvCount(b, "BLACKBOX_BENCH_RELAY_PEERS", 20, 0)
	env := []string{"BLACKBOX_MDNS=false"}
	plain := serve(b, bin, env)
	// Every peer is on 127.0.0.1: the per-IP limit (8) would refuse most.
	relay := serve(b, bin, append(env, "BLACKBOX_NETWORK_REACHABILITY=public", "BLACKBOX_NETWORK_RELAY_SERVICE=on",
		"BLACKBOX_NETWORK_RELAY_LIMITS_MAX_RESERVATIONS_PER_IP=128"))
	rs := waitStatus(b, bin, relay)
	waitStatus(b, bin, plain)
	var relayInfo *peer.AddrInfo
	for _, a := range rs.Addrs {
		if strings.Contains(a, "/tcp/") {
			ai, err := peer.AddrInfoFromString(a)
			if err != nil {
				b.Fatal(err)
			}
			relayInfo = ai
		}
	}
	priv := serve(b, bin, append(env, "BLACKBOX_NETWORK_REACHABILITY=private", "BLACKBOX_NETWORK_RELAYS="+relayInfo.Addrs[0].String()+"/p2p/"+rs.PeerID))
	waitFor(b, 90*time.Second, "the private node's relay slot", func() bool {
		out, err := runCLI(b, bin, "status", "--json", "--data-dir", priv.dir)
		return err == nil && strings.Contains(out, `"state": "private"`)
	})
	for i := range peers {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := h.Connect(ctx, *relayInfo); err != nil {
			b.Fatalf("peer %d: connect to the relay: %v", i, err)
		}
		if _, err := client.Reserve(ctx, h, *relayInfo); err != nil {
			b.Fatalf("peer %d: reserve a slot: %v", i, err)
		}
		cancel()
	}
	b.Logf("%d in-process peers hold a slot on the relay", peers)
	time.Sleep(settle)
	procs := []struct {
		name string
		p    *proc
	}{{"loopback node, network defaults", plain}, {fmt.Sprintf("public relay, %d slots held", peers+1), relay}, {"private node holding a relay slot", priv}}
	before := make([]float64, len(procs))
	for i, p := range procs {
		before[i] = procCPUSeconds(b, p.p.cmd.Process.Pid)
	}
	began := time.Now()
	time.Sleep(idle)
	window := time.Since(began).Seconds()
	for i, p := range procs {
		pid := p.p.cmd.Process.Pid
		cpu := 100 * (procCPUSeconds(b, pid) - before[i]) / window
		rss := procKiB(b, pid, "VmRSS") / 1024
		b.Logf("%s, idle %.0fs: CPU %.2f%% of a core, RSS %.0f MiB, peak %.0f MiB", p.name, window, cpu, rss, procKiB(b, pid, "VmHWM")/1024)
		fmt.Printf("BENCHROW %s idle CPU (%.0fs) = %.2f %% core|-|-|< 1 %% core|%s\n", p.name, window, cpu, yesNo(cpu < 1))
		fmt.Printf("BENCHROW %s idle RSS = %.0f MiB|-|-|< 80 MiB|%s\n", p.name, rss, yesNo(rss < 80))
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
