package netlab

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// portsGiven are the ports LoopbackPort handed out in this process.
var portsGiven sync.Map

// LoopbackPort is a loopback TCP port nothing listens on now, below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range) and never handed
// out twice in this process: one a test's daemon (a blackbox node, btcd)
// can be stopped and started on again. A port from the ephemeral range,
// what port 0 gives, can be taken in between as the source port of any
// process's outgoing connection; the restart then fails with "address
// already in use", as CI runs saw twice. Below the range only explicit
// binds land, and those of tests pick with this.
func LoopbackPort() (int, error) {
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
		return port, nil
	}
	return 0, errors.New("no free loopback port below the ephemeral range")
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
