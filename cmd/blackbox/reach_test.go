//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// reachStatus is status --json's reachability, as scripts read it.
type reachStatus struct {
	Addrs        []string `json:"addrs"`
	Reachability struct {
		State        string   `json:"state"`
		Source       string   `json:"source"`
		PublicAddrs  []string `json:"public_addrs"`
		RelayAddrs   []string `json:"relay_addrs"`
		Relays       []string `json:"relays"`
		HolePunching string   `json:"hole_punching"`
		DHTMode      string   `json:"dht_mode"`
		RelayService bool     `json:"relay_service"`
		PortMapping  bool     `json:"port_mapping"`
		NAT          struct {
			TCP string `json:"tcp"`
			UDP string `json:"udp"`
		} `json:"nat"`
		HolePunch struct {
			Attempts  *uint64 `json:"attempts"`
			Successes *uint64 `json:"successes"`
		} `json:"holepunch"`
	} `json:"reachability"`
}

func reachOf(t *testing.T, bin string, p *proc) reachStatus {
	t.Helper()
	out, err := runCLI(t, bin, "status", "--json", "--data-dir", p.dir)
	if err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	var s reachStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
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
		r.DHTMode != "client" || r.RelayService || !r.PortMapping || r.HolePunch.Attempts == nil || r.HolePunch.Successes == nil {
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
