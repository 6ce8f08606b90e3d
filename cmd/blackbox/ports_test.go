//go:build integration

package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// portsGiven are the ports freePort handed out in this process.
var portsGiven sync.Map

// freePort is a loopback TCP port nothing listens on now, below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range) and never handed
// out twice in this process. A daemon restarted on the port it had must
// find it free: a port from the ephemeral range (what port 0 gives) can be
// taken in between as the source port of any process's outgoing
// connection, and the daemon then rightly refuses to start ("port in use
// by another process"), as a CI run once saw. Below the range only
// explicit binds land.
func freePort(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 1000 {
		port := 10000 + rand.IntN(low-10000)
		if _, taken := portsGiven.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return strconv.Itoa(port)
	}
	t.Fatalf("no free loopback port in 10000..%d", low)
	return ""
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// if it cannot be read or leaves too little room below it).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &low, &high); err != nil || low < 12000 {
		return 32768
	}
	return low
}
