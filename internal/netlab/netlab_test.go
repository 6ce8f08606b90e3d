//go:build integration

package netlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// echoServer accepts TCP connections in h and writes each peer's address
// as it sees it.
func echoServer(t *testing.T, h *Host, port int) string {
	t.Helper()
	l, err := h.Listen("tcp", fmt.Sprintf("%s:%d", h.IP, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	return l.Addr().String()
}

// seen dials addr from h and returns the address the server saw, or the
// dial's error.
func seen(h *Host, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// udpMapping sends from one UDP socket in h to two servers on the public
// host and returns the source addresses they saw.
func udpMapping(t *testing.T, h, pub *Host) (local string, seenBy [2]string) {
	t.Helper()
	var srv [2]net.PacketConn
	for i := range srv {
		c, err := pub.ListenPacket("udp4", pub.IP.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		srv[i] = c
	}
	c, err := h.ListenPacket("udp4", h.IP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, s := range srv {
		buf := make([]byte, 64)
		for try := 0; ; try++ {
			if _, err := c.WriteTo([]byte("hi"), s.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			s.SetReadDeadline(time.Now().Add(time.Second))
			_, from, err := s.ReadFrom(buf)
			if err == nil {
				seenBy[i] = from.String()
				break
			}
			if try == 5 {
				t.Fatalf("UDP from %s to %s never arrived: %v", h.Name, s.LocalAddr(), err)
			}
		}
	}
	return c.LocalAddr().String(), seenBy
}

// punch: x and y each learn their public address from a server on pub
// (as libp2p learns its observed address), then send to each other's at
// once for a few rounds; it reports whether both received the other's.
func punch(t *testing.T, x, y *Host, _ *Router, pub *Host) bool {
	t.Helper()
	srv, err := pub.ListenPacket("udp4", pub.IP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var socks [2]net.PacketConn
	var public [2]net.Addr
	for i, h := range []*Host{x, y} {
		c, err := h.ListenPacket("udp4", h.IP.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks[i] = c
		buf := make([]byte, 64)
		for try := 0; ; try++ {
			c.WriteTo([]byte("stun"), srv.LocalAddr())
			srv.SetReadDeadline(time.Now().Add(time.Second))
			if _, from, err := srv.ReadFrom(buf); err == nil {
				public[i] = from
				break
			}
			if try == 5 {
				t.Fatalf("%s never reached the public server", h.Name)
			}
		}
	}
	got := [2]bool{}
	done := make(chan struct{})
	for i := range socks {
		go func() {
			buf := make([]byte, 64)
			socks[i].SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, _, err := socks[i].ReadFrom(buf); err == nil && string(buf[:n]) == "punch" {
				got[i] = true
			}
			done <- struct{}{}
		}()
	}
	for round := 0; round < 5; round++ {
		socks[0].WriteTo([]byte("punch"), public[1])
		socks[1].WriteTo([]byte("punch"), public[0])
		time.Sleep(100 * time.Millisecond)
	}
	<-done
	<-done
	return got[0] && got[1]
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
func host(addr string) string { h, _, _ := net.SplitHostPort(addr); return h }

// TestInternet checks the harness itself: homes reach the public segment
// through their NAT and are seen at the router's address; nothing outside
// a home reaches into it; two homes cannot reach each other directly; the
// cone router keeps a socket's port for every destination, the symmetric
// one does not; partition, heal, loss, rate limit and port forward do what
// they say; and Close leaves no namespace behind.
func TestInternet(t *testing.T) {
	in := New(t)
	pub := in.PublicHost("server")
	cone, sym := in.Home("cone", Cone), in.Home("sym", Symmetric)
	a, b := cone.Host("a"), sym.Host("b")
	a2 := cone.Host("a2")
	srv := echoServer(t, pub, 8080)

	// Out through the NAT, seen at the router's WAN address.
	for _, h := range []*Host{a, b} {
		got, err := seen(h, srv)
		if err != nil {
			t.Fatalf("%s cannot reach the public server: %v", h.Name, err)
		}
		router := cone.Router
		if h == b {
			router = sym.Router
		}
		if host(got) != router.IP.String() {
			t.Errorf("the public server saw %s from %s, want its router's %s", got, h.Name, router.IP)
		}
	}
	// Same LAN: direct.
	lanSrv := echoServer(t, a, 9000)
	if got, err := seen(a2, lanSrv); err != nil || host(got) != a2.IP.String() {
		t.Errorf("a2 → a on their LAN: %q, %v; want seen as %s", got, err, a2.IP)
	}
	// Nothing gets in: not to the LAN address, not to the router's.
	if got, err := seen(pub, lanSrv); err == nil {
		t.Errorf("the public side reached a home host directly (%s)", got)
	}
	if got, err := seen(pub, fmt.Sprintf("%s:9000", cone.Router.IP)); err == nil {
		t.Errorf("the public side reached into the cone home through its router (%s)", got)
	}
	// Homes cannot reach each other directly.
	if got, err := seen(b, lanSrv); err == nil {
		t.Errorf("the symmetric home reached the cone home's host directly (%s)", got)
	}

	// NAT mapping, proven with UDP.
	local, by := udpMapping(t, a, pub)
	if port(by[0]) != port(by[1]) || port(by[0]) != port(local) {
		t.Errorf("cone NAT: socket %s seen as %s and %s; want one port, its own", local, by[0], by[1])
	}
	local, by = udpMapping(t, b, pub)
	if port(by[0]) == port(by[1]) {
		t.Errorf("symmetric NAT: socket %s seen as %s by both servers; want a port per destination", local, by[0])
	}

	// Hole punching at the packet level: two hosts behind cone NATs send
	// to each other's public address at once and both get through; with
	// the symmetric NAT on one side, the port the other side learnt is
	// not the one used towards it, and nothing does.
	c := in.Home("cone2", Cone).Host("c")
	if !punch(t, a, c, cone.Router, pub) {
		t.Errorf("UDP hole punching between two cone NATs failed")
	}
	if punch(t, a, b, sym.Router, pub) {
		t.Errorf("UDP hole punching with a symmetric NAT worked; want it to fail")
	}

	// Double NAT: a home behind a carrier-grade NAT reaches the public
	// side, seen at the carrier's address; nothing gets in.
	isp := in.CGNAT("isp", Cone)
	d := isp.Home("cg", Cone).Host("d")
	if got, err := seen(d, srv); err != nil || host(got) != isp.Router.IP.String() {
		t.Errorf("behind the CGNAT: %q, %v; want seen as the carrier's %s", got, err, isp.Router.IP)
	}
	dSrv := echoServer(t, d, 9001)
	if got, err := seen(pub, dSrv); err == nil {
		t.Errorf("the public side reached a host behind the double NAT (%s)", got)
	}

	// A port forward lets the outside in on that port only.
	if err := cone.Router.Forward(9000, a); err != nil {
		t.Fatal(err)
	}
	if got, err := seen(pub, fmt.Sprintf("%s:9000", cone.Router.IP)); err != nil || host(got) != pub.IP.String() {
		t.Errorf("through the port forward: %q, %v", got, err)
	}

	// Traffic counts what went to and from a peer.
	if err := cone.Router.Watch(pub.IP); err != nil {
		t.Fatal(err)
	}
	if _, err := seen(a, srv); err != nil {
		t.Fatal(err)
	}
	if n, err := cone.Router.Traffic(pub.IP); err != nil || n == 0 {
		t.Errorf("traffic to the public server: %d bytes, %v", n, err)
	}
	if n, err := cone.Router.Traffic(sym.Router.IP); err != nil || n != 0 {
		t.Errorf("traffic to the other home (never watched, never sent): %d bytes, %v", n, err)
	}

	// Partition and heal; loss.
	if err := cone.Router.Partition(); err != nil {
		t.Fatal(err)
	}
	if got, err := seen(a, srv); err == nil {
		t.Errorf("a partitioned home reached the public server (%s)", got)
	}
	if err := cone.Router.Heal(); err != nil {
		t.Fatal(err)
	}
	if _, err := seen(a, srv); err != nil {
		t.Errorf("after the heal: %v", err)
	}
	if err := cone.Router.Loss(100); err != nil {
		t.Fatal(err)
	}
	if got, err := seen(a, srv); err == nil {
		t.Errorf("100%% loss let a connection through (%s)", got)
	}
	if err := cone.Router.Loss(2); err != nil {
		t.Fatal(err)
	}
	if out, _ := cone.Router.Run("nft", "list", "table", "inet", "impair"); !strings.Contains(out, "numgen random mod 100 < 2") {
		t.Errorf("2%% loss rule not in place:\n%s", out)
	}
	if err := cone.Router.Loss(0); err != nil {
		t.Fatal(err)
	}
	if err := cone.Router.RateLimit(10); err != nil {
		t.Fatal(err)
	}
	if out, _ := cone.Router.Run("tc", "qdisc", "show", "dev", "wan"); !strings.Contains(out, "tbf") || !strings.Contains(out, "10Mbit") {
		t.Errorf("no 10 Mbit tbf on the uplink:\n%s", out)
	}
	if err := cone.Router.RateLimit(0); err != nil {
		t.Fatal(err)
	}
	if _, err := seen(a, srv); err != nil {
		t.Errorf("after the impairments were lifted: %v", err)
	}

	// Close removes everything.
	in.Close()
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), in.ID()+"-") {
		t.Errorf("namespaces left after Close:\n%s", out)
	}
}

// TestRemoveStale: the namespaces of a dead run go; those of a live one
// stay.
func TestRemoveStale(t *testing.T) {
	Require(t)
	// PID 4194304 is above the kernel's pid_max limit: never alive.
	dead := namePrefix + "4194304x1-pub"
	if out, err := exec.Command("ip", "netns", "add", dead).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", dead).Run() })
	in := New(t) // calls RemoveStale
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), dead) {
		t.Errorf("a dead run's namespace %s was left", dead)
	}
	if !strings.Contains(string(out), in.ID()+"-pub") {
		t.Errorf("the live internet's namespace is gone:\n%s", out)
	}
}
