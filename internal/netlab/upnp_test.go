//go:build integration

package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// natpmpMapTCP asks gw (NAT-PMP, RFC 6886) from h to map the WAN's TCP
// port ext to h's port port for an hour and returns the WAN port granted.
func natpmpMapTCP(h *Host, gw netip.Addr, port, ext int) (int, error) {
	var granted int
	err := h.enter(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(gw, 5351).String())
		if err != nil {
			return err
		}
		defer c.Close()
		req := make([]byte, 12)
		req[1] = 2 // map TCP
		binary.BigEndian.PutUint16(req[4:], uint16(port))
		binary.BigEndian.PutUint16(req[6:], uint16(ext))
		binary.BigEndian.PutUint32(req[8:], 3600)
		resp := make([]byte, 16)
		var last error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if _, err := c.Write(req); err != nil {
				last = err
				time.Sleep(200 * time.Millisecond)
				continue
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(resp)
			if err != nil {
				last = err // a port unreachable, or no answer yet
				time.Sleep(200 * time.Millisecond)
				continue
			}
			if n < 16 || resp[1] != 128+2 {
				return fmt.Errorf("NAT-PMP: bad answer % x", resp[:n])
			}
			if code := binary.BigEndian.Uint16(resp[2:]); code != 0 {
				return fmt.Errorf("NAT-PMP: result code %d", code)
			}
			granted = int(binary.BigEndian.Uint16(resp[10:]))
			return nil
		}
		return fmt.Errorf("NAT-PMP: no answer from %s in 10 s: %v", gw, last)
	})
	return granted, err
}

// TestUPnP: a router running miniupnpd maps a WAN port to a LAN host when
// the host asks (NAT-PMP), and the public side then connects straight in;
// before that, the router's firewall drops it.
func TestUPnP(t *testing.T) {
	in := New(t)
	pub := in.PublicHost("pub")
	hm := in.Home("a", Cone)
	h := hm.Host("h")
	if err := hm.UPnP(); err != nil {
		t.Fatal(err)
	}
	echoServer(t, h, 7460)
	wan := netip.AddrPortFrom(hm.Router.IP, 7460).String()
	if got, err := seen(pub, wan); err == nil {
		t.Fatalf("unmapped: the public host got in to %s (%q)", wan, got)
	}
	ext, err := natpmpMapTCP(h, hm.Router.LAN, 7460, 7460)
	if err != nil {
		t.Fatalf("%v\nminiupnpd: %s", err, hm.Router.LogUPnP())
	}
	if ext != 7460 {
		t.Fatalf("granted WAN port %d, asked 7460", ext)
	}
	rules, err := hm.Router.PortMappings()
	if err != nil || len(rules) != 1 || rules[0] != "tcp 7460 "+h.IP.String()+":7460" {
		t.Fatalf("mappings %q (%v), want one to %s:7460\nminiupnpd: %s", rules, err, h.IP, hm.Router.LogUPnP())
	}
	got, err := seen(pub, wan)
	if err != nil {
		t.Fatalf("mapped: dial %s from the public host: %v\nrules: %q", wan, err, rules)
	}
	if host(got) != pub.IP.String() {
		t.Fatalf("the LAN host saw %s, want the public host %s", got, pub.IP)
	}
	// Secure mode: a host may not map a port to another host.
	other := hm.Host("other")
	if _, err := natpmpMapTCP(other, hm.Router.LAN, 7461, 7461); err != nil {
		t.Fatalf("its own mapping: %v", err)
	}
	if rules, _ := hm.Router.PortMappings(); len(rules) != 2 {
		t.Fatalf("mappings %q, want 2", rules)
	}

	// NAT-PMP only: the router maps through NAT-PMP as above, and no UPnP
	// IGD listens (SSDP, UDP 1900).
	pmp := in.Home("b", Cone)
	hb := pmp.Host("hb")
	if err := pmp.NATPMP(); err != nil {
		t.Fatal(err)
	}
	if out, err := pmp.Router.Run("ss", "-Hlun", "sport = :1900"); err != nil || out != "" {
		t.Fatalf("NAT-PMP only: something listens on UDP 1900 (%v): %q\nminiupnpd: %s", err, out, pmp.Router.LogUPnP())
	}
	echoServer(t, hb, 7460)
	if ext, err := natpmpMapTCP(hb, pmp.Router.LAN, 7460, 7460); err != nil || ext != 7460 {
		t.Fatalf("NAT-PMP only: granted %d (%v), asked 7460\nminiupnpd: %s", ext, err, pmp.Router.LogUPnP())
	}
	wanB := netip.AddrPortFrom(pmp.Router.IP, 7460).String()
	if got, err := seen(pub, wanB); err != nil || host(got) != pub.IP.String() {
		t.Fatalf("NAT-PMP only: mapped %s: the LAN host saw %q (%v)", wanB, got, err)
	}
}
