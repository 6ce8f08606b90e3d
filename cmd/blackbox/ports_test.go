//go:build integration

package main

import (
	"strconv"
	"testing"

	"github.com/blackbox-market/blackbox/internal/netlab"
)

// freePort is a loopback TCP port a test's daemon can listen on, and be
// restarted on (netlab.LoopbackPort).
func freePort(t testing.TB) string {
	t.Helper()
	port, err := netlab.LoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(port)
}
