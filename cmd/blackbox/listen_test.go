//go:build integration

package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveExits runs `blackbox serve` with args and returns its output once it
// exits, failing the test if it is still running after 20 s (it started).
func serveExits(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", t.TempDir()}, args...)...)
	cmd.Env = append(os.Environ(), "BLACKBOX_MDNS=false")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return logs.String(), err
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("serve %v started on a port in use:\n%s", args, logs.String())
		return "", nil
	}
}

// TestListenPortInUse: a second daemon on a port another process holds
// refuses to start with a clear error (issue 9, bug 12: libp2p binds TCP
// with SO_REUSEPORT, so it used to start and split the connections).
func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("real processes: not in -short")
	}
	bin := binary(t)
	addr := "/ip4/127.0.0.1/tcp/" + freePort(t)
	first := serve(t, bin, []string{"BLACKBOX_MDNS=false"}, "--listen", addr)
	st := waitStatus(t, bin, first)
	if !strings.Contains(strings.Join(st.Addrs, " "), addr+"/p2p/") {
		t.Fatalf("first daemon does not listen on %s: %v", addr, st.Addrs)
	}
	out, err := serveExits(t, bin, "--listen", addr)
	if err == nil || !strings.Contains(out, "port in use") || !strings.Contains(out, addr) {
		t.Errorf("second daemon on %s: %v\n%s", addr, err, out)
	}

	// A port held by anything else (here a plain UDP socket) is refused too.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	quic := "/ip4/127.0.0.1/udp/" + strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port) + "/quic-v1"
	out, err = serveExits(t, bin, "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", quic)
	if err == nil || !strings.Contains(out, "UDP port in use") {
		t.Errorf("daemon on held UDP port %s: %v\n%s", quic, err, out)
	}
}
